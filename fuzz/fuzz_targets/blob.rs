//! Fuzz target: the `blob` decoder (see strata's src/fuzz.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    strata::internals::fuzz_target("blob").expect("a target of src/fuzz.rs")(data);
});
