//! The APR loader and exporter against arbitrary input.
//! - Any byte string given to the APR loader gives a model index or an error: never a panic,
//!   an out-of-bounds read, or an unbounded allocation. (The container is parsed by aprender's
//!   `apr-format`; our index on top of it goes through the GGUF reader's checks.)
//! - Any byte string that parses as GGUF either exports to APR, loading back with the same
//!   tensors byte for byte, or is refused by the exporter with an error.
//!
//! Seed it with the GGUF target's corpus: `cargo +nightly fuzz run apr corpus/apr corpus/gguf`
//! (new inputs go to the first folder).
#![no_main]

use chapters_code::formats::{Gguf, apr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = apr::from_bytes(data.to_vec()) {
        for info in &g.tensors {
            let view = g.tensor(&info.name).expect("a listed tensor has a view");
            assert_eq!(view.data.len() as u64, info.n_bytes);
        }
    }
    if let Ok(g) = Gguf::from_bytes(data.to_vec())
        && let Ok(bytes) = apr::export(&g)
    {
        let back = apr::from_bytes(bytes).expect("an exported file loads back");
        assert_eq!(back.tensors.len(), g.tensors.len());
        for info in &g.tensors {
            let (a, b) = (g.tensor(&info.name), back.tensor(&info.name));
            assert_eq!(
                a.expect("listed").data,
                b.expect("exported").data,
                "{}",
                info.name
            );
        }
    }
});
