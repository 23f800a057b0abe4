use std::path::PathBuf;

use super::exit;
use clap::{Args, Subcommand};
use serde_json::json;

use super::{non_empty, output, prompt_password, read_password_file, Global};

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
            return non_empty(read_password_file(f)?, "the new password file");
        }
        if let Some(p) = std::env::var_os("STRATA_NEW_PASSWORD") {
            return non_empty(p.into_encoded_bytes(), "STRATA_NEW_PASSWORD");
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
                    .map(|(id, k)| json!({"id": id.to_hex(), "created": k.created, "host": k.host, "user": k.user, "current": *id == repo.key_id(),
                        "kdf": {"algorithm": k.kdf.algorithm, "memory_kib": k.kdf.memory_kib, "iterations": k.kdf.iterations, "parallelism": k.kdf.parallelism}}))
                    .collect();
                output::print_json(&serde_json::Value::Array(v));
            } else {
                for (id, k) in keys {
                    let cur = if id == repo.key_id() { "*" } else { " " };
                    // The cost shows a key made cheap (STRATA_TEST_FAST_KDF: 64 KiB, 1 pass).
                    let weak = if k.kdf.memory_kib < strata::KdfCost::DEFAULT.memory_kib {
                        "  WEAK"
                    } else {
                        ""
                    };
                    println!(
                        "{cur} {}  {}  {}@{}  argon2id m={} KiB t={} p={}{weak}",
                        id.short(),
                        k.created,
                        k.user,
                        k.host,
                        k.kdf.memory_kib,
                        k.kdf.iterations,
                        k.kdf.parallelism
                    );
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
