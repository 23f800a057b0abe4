//! Fuzz target: the `pack_header` decoder (see strata's src/fuzz.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    strata::internals::fuzz_target("pack_header").expect("a target of src/fuzz.rs")(data);
});
