//! The book's engine as a WebAssembly module. The same crate code as the native engine
//! (`chapters-code` without its `native` feature), behind a handful of exported functions that
//! a Web Worker calls:
//!
//! 1. `prodml_alloc(len)` reserves `len` bytes in the module's memory; the worker streams the
//!    GGUF file into them as it downloads (one copy of the model at the peak, not two);
//! 2. `prodml_load(ptr, len)` hands those bytes to the engine (no copy) and checks the model;
//! 3. `prodml_start(ptr, len, chat, max_tokens)` tokenizes a prompt written the same way and
//!    runs it through the model;
//! 4. `prodml_step()` chooses one token and returns it, its text readable at
//!    `prodml_message_ptr()` / `prodml_message_len()` — control goes back to JavaScript
//!    between tokens, so the page streams text and a stop button takes effect at once;
//! 5. `prodml_stop()` ends a generation early and frees its KV cache.
//!
//! Every function returns a negative number on failure, with the error's text at
//! `prodml_message_ptr()`. No function panics on bad input.

pub use chapters_code::session::{Session, Step};

use std::cell::RefCell;

thread_local! {
    /// The loaded model (WebAssembly here is single-threaded: one instance, one session).
    static SESSION: RefCell<Option<Session>> = const { RefCell::new(None) };
    /// The last text piece or error message.
    static MESSAGE: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Returned when a call failed; the message says why.
const FAILED: i32 = -1;
/// Returned by `prodml_step` when the generation is over.
const DONE: i32 = -2;

fn say(text: &str) {
    MESSAGE.with(|m| {
        let mut m = m.borrow_mut();
        m.clear();
        m.push_str(text);
    });
}

fn fail(error: &str) -> i32 {
    say(error);
    FAILED
}

/// Takes back `len` bytes reserved by [`prodml_alloc`].
///
/// # Safety
/// `ptr` and `len` come from one `prodml_alloc` call, not taken back before.
unsafe fn take(ptr: *mut u8, len: usize) -> Vec<u8> {
    if len == 0 {
        return Vec::new();
    }
    // SAFETY: the caller's contract; prodml_alloc made a Vec of exactly this capacity.
    unsafe { Vec::from_raw_parts(ptr, len, len) }
}

/// Reserves `len` bytes in the module's memory for the caller to fill (a model file, a prompt)
/// and pass to [`prodml_load`] or [`prodml_start`], which take them back. Null when `len` is 0.
#[unsafe(no_mangle)]
pub extern "C" fn prodml_alloc(len: usize) -> *mut u8 {
    if len == 0 {
        return std::ptr::null_mut();
    }
    let mut v = vec![0u8; len];
    let ptr = v.as_mut_ptr();
    std::mem::forget(v);
    ptr
}

/// Gives back bytes reserved by [`prodml_alloc`] and never passed on.
///
/// # Safety
/// `ptr` and `len` come from one `prodml_alloc` call, not given back or passed on before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn prodml_free(ptr: *mut u8, len: usize) {
    // SAFETY: the caller's contract.
    drop(unsafe { take(ptr, len) });
}

/// Loads the GGUF file in `len` bytes at `ptr` (from [`prodml_alloc`]; the module keeps them).
/// 0 on success. One model per instance: a second load is refused.
///
/// # Safety
/// `ptr` and `len` come from one `prodml_alloc` call, not given back or passed on before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn prodml_load(ptr: *mut u8, len: usize) -> i32 {
    // SAFETY: the caller's contract.
    let bytes = unsafe { take(ptr, len) };
    if SESSION.with(|s| s.borrow().is_some()) {
        return fail(
            "a model is already loaded in this instance: start a new instance for another",
        );
    }
    match Session::load(bytes) {
        Ok(session) => {
            SESSION.with(|s| *s.borrow_mut() = Some(session));
            say("loaded");
            0
        }
        Err(e) => fail(&format!("cannot load the model: {e}")),
    }
}

/// Starts a greedy generation of at most `max_tokens` tokens after the UTF-8 prompt in `len`
/// bytes at `ptr` (from [`prodml_alloc`]; taken back): raw text when `chat` is 0, one user
/// message through the chat template when it is 1, and when it is 2 a whole conversation, the
/// text being OpenAI's `messages` as JSON. Returns the prompt's length in tokens.
///
/// # Safety
/// `ptr` and `len` come from one `prodml_alloc` call, not given back or passed on before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn prodml_start(ptr: *mut u8, len: usize, chat: i32, max_tokens: i32) -> i32 {
    // SAFETY: the caller's contract.
    let bytes = unsafe { take(ptr, len) };
    let Ok(prompt) = String::from_utf8(bytes) else {
        return fail("the prompt is not valid UTF-8");
    };
    if max_tokens < 1 {
        return fail("max_tokens must be at least 1");
    }
    SESSION.with(|s| {
        let mut s = s.borrow_mut();
        let Some(session) = s.as_mut() else {
            return fail("no model loaded: call prodml_load first");
        };
        let ids = match chat {
            0 | 1 => session.prompt_ids(&prompt, chat == 1),
            2 => session.conversation_ids(&prompt),
            _ => Err(format!("chat must be 0 (raw text), 1 (one user message) or 2 (a JSON conversation), not {chat}")),
        };
        let result = ids.and_then(|ids| session.start(&ids, max_tokens as usize).map(|()| ids.len()));
        match result {
            Ok(n) => i32::try_from(n).unwrap_or(i32::MAX),
            Err(e) => fail(&e),
        }
    })
}

/// Chooses the next token: returns its id (its text at [`prodml_message_ptr`]), or −2 when the
/// generation is over (the rest of the text there), or −1 on an error.
#[unsafe(no_mangle)]
pub extern "C" fn prodml_step() -> i32 {
    SESSION.with(|s| {
        let mut s = s.borrow_mut();
        let Some(session) = s.as_mut() else {
            return fail("no model loaded: call prodml_load first");
        };
        match session.step() {
            Ok(Step::Token(id, text)) => {
                say(&text);
                i32::try_from(id).unwrap_or(FAILED)
            }
            Ok(Step::Done(rest)) => {
                say(&rest);
                DONE
            }
            Err(e) => fail(&e),
        }
    })
}

/// Ends the generation in progress, if any, and frees its KV cache.
#[unsafe(no_mangle)]
pub extern "C" fn prodml_stop() {
    SESSION.with(|s| {
        if let Some(session) = s.borrow_mut().as_mut() {
            session.stop();
        }
    });
}

/// Where the last text piece or error message is (UTF-8, [`prodml_message_len`] bytes).
#[unsafe(no_mangle)]
pub extern "C" fn prodml_message_ptr() -> *const u8 {
    MESSAGE.with(|m| m.borrow().as_ptr())
}

#[unsafe(no_mangle)]
pub extern "C" fn prodml_message_len() -> usize {
    MESSAGE.with(|m| m.borrow().len())
}

/// 1 when this module was built with WebAssembly SIMD (simd128), else 0.
#[unsafe(no_mangle)]
pub extern "C" fn prodml_simd128() -> i32 {
    i32::from(cfg!(target_feature = "simd128"))
}

/// Which dot-product kernels run: 0 the scalar reference, 1 simd128, 2 simd128 with
/// relaxed-SIMD's fused multiply-add and i8 · i7 dot (a module built with `+relaxed-simd`, on an
/// engine whose `relaxed_madd` fuses; where it does not, such a module runs the simd128 ones).
#[unsafe(no_mangle)]
pub extern "C" fn prodml_kernels() -> i32 {
    #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
    if chapters_code::kernels::wasm_relaxed::fused() {
        return 2;
    }
    i32::from(cfg!(target_feature = "simd128"))
}

/// Checks the simd128 kernels (and the relaxed-SIMD ones where they run) against the scalar reference on `rows` seeded random rows of
/// `blocks` blocks (Q4_1 · Q8_1 and Q8_0 · Q8_0): returns how many rows differ in any bit, or
/// −1 when this module has no simd128 kernels.
#[unsafe(no_mangle)]
pub extern "C" fn prodml_kernel_self_test(rows: u32, blocks: u32, seed: u32) -> i32 {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        let (_, differ) = chapters_code::kernels::wasm_simd128::self_test(
            rows as usize,
            blocks as usize,
            u64::from(seed) << 1 | 1,
        );
        i32::try_from(differ).unwrap_or(i32::MAX)
    }
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    {
        let _ = (rows, blocks, seed);
        -1
    }
}
