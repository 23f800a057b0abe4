use std::path::PathBuf;

use super::exit;
use clap::{Args, Subcommand};
use serde_json::json;

use super::{output, prompt_password, read_password_file, Global};

#[derive(Args, Debug)]
pub struct KeyArgs {
    #[command(subcommand)]
    cmd: KeyCmd,
}

#[derive(Subcommand, Debug)]
enum KeyCmd {
    /// List the keys (passwords) of the repository.
    List,
    /// Add a password.
    Add(NewPassword),
    /// Remove a key by id or unique prefix.
    Remove { id: String },
    /// Change the password in use: add the new one, remove the current one.
    Passwd(NewPassword),
}

#[derive(Args, Debug)]
struct NewPassword {
    /// Read the new password from this file (else STRATA_NEW_PASSWORD, else a prompt).
    #[arg(long)]
    new_password_file: Option<PathBuf>,
}

impl NewPassword {
    fn get(&self) -> anyhow::Result<Vec<u8>> {
        if let Some(f) = &self.new_password_file {
            return read_password_file(f);
        }
        if let Some(p) = std::env::var_os("STRATA_NEW_PASSWORD") {
            return Ok(p.into_encoded_bytes());
        }
        prompt_password("new password: ", true)
    }
}

pub fn run(global: &Global, args: KeyArgs) -> anyhow::Result<i32> {
    let repo = global.open()?;
    match args.cmd {
        KeyCmd::List => {
            let keys = repo.keys().list()?;
            if global.json {
                let v: Vec<_> = keys
                    .iter()
                    .map(|(id, k)| json!({"id": id.to_hex(), "created": k.created, "host": k.host, "user": k.user, "current": *id == repo.key_id()}))
                    .collect();
                output::print_json(&serde_json::Value::Array(v));
            } else {
                for (id, k) in keys {
                    let cur = if id == repo.key_id() { "*" } else { " " };
                    println!("{cur} {}  {}  {}@{}", id.short(), k.created, k.user, k.host);
                }
            }
        }
        KeyCmd::Add(p) => {
            let id = repo.keys().add(&p.get()?, &global.kdf_cost())?;
            if !global.quiet {
                println!("added key {}", id.to_hex());
            }
        }
        KeyCmd::Remove { id } => {
            let target = repo.keys().find(&id)?;
            repo.keys().remove(&target)?;
            if !global.quiet {
                println!("removed key {}", target.to_hex());
            }
        }
        KeyCmd::Passwd(p) => {
            let new = repo.keys().change_password(&p.get()?, &global.kdf_cost())?;
            if !global.quiet {
                println!(
                    "password changed: key {} replaces {}",
                    new.short(),
                    repo.key_id().short()
                );
            }
        }
    }
    Ok(exit::OK)
}
