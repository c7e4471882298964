//! GPT-2's byte-level alphabet: every byte 0..=255 gets a printable Unicode character, so that
//! any byte string is a string of "characters" a BPE vocabulary can hold. Printable ASCII and
//! most of Latin-1 map to themselves; the other 68 bytes (controls, space, ...) map to
//! U+0100 onward — which is why a space shows up as `Ġ` (U+0120) in the vocabulary.

/// `table[b]` is the character standing for byte `b`.
pub fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next_extra = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        table[b as usize] = if printable {
            char::from(b)
        } else {
            let c = char::from_u32(256 + next_extra).expect("U+0100..U+0143 are characters");
            next_extra += 1;
            c
        };
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_gpt2_bytes_to_unicode() {
        let t = byte_to_char_table();
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[b'\t' as usize], 'ĉ');
        assert_eq!(t[b'a' as usize], 'a');
        assert_eq!(t[0], 'Ā');
        assert_eq!(t[0xAD], 'Ń');
        let distinct: std::collections::HashSet<char> = t.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
    }
}
