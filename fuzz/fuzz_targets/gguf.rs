//! Any byte string given to the GGUF reader gives a file or an error — never a panic, an
//! out-of-bounds read, or an unbounded allocation. When parsing succeeds, every tensor view
//! and every typed accessor must work too.
#![no_main]

use chapters_code::formats::Gguf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = Gguf::from_bytes(data.to_vec()) {
        for info in &g.tensors {
            let view = g.tensor(&info.name).expect("a listed tensor has a view");
            assert_eq!(view.data.len() as u64, info.n_bytes);
            let _ = view.as_f32();
        }
        for (key, _) in &g.metadata {
            let _ = g.get_str(key);
            let _ = g.get_u64(key);
            let _ = g.get_str_array(key);
        }
    }
});
