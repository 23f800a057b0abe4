//! Fuzz target: a limited tree walk over crafted shapes (see strata's src/fuzz.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    strata::internals::fuzz_target("tree_walk").expect("a target of src/fuzz.rs")(data);
});
