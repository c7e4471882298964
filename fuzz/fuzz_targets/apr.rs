//! Any byte string given to the APR loader gives a model index or an error — never a panic,
//! an out-of-bounds read, or an unbounded allocation. The APR container is parsed by aprender
//! (`apr-format`); our index on top of it goes through the GGUF reader's checks.
#![no_main]

use chapters_code::formats::apr;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = apr::from_bytes(data.to_vec()) {
        for info in &g.tensors {
            let view = g.tensor(&info.name).expect("a listed tensor has a view");
            assert_eq!(view.data.len() as u64, info.n_bytes);
        }
    }
});
