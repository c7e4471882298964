//! The block formats against their references: dequantization bit for bit against the `gguf`
//! Python package (llama.cpp's numpy reference), quantization byte for byte where llama.cpp's
//! reference quantizer is the spec, error bounds from llama.cpp's own test
//! (`test-quantize-fns`), and hand-made blocks for the bit layouts.

use super::blocks::{BlockQ4_0, BlockQ4_1, BlockQ8_0, block_bytes};
use super::kquants::*;
use super::nf4::*;
use super::q5_0::*;
use super::quantize::{
    dequantize_q4_0, dequantize_q4_1, dequantize_q8_0, quantize_acts_q8_0, quantize_q4_0,
    quantize_q4_1, quantize_q8_0,
};
use crate::formats::gguf::{Pod, cast_slice};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixtures {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    kind: String,
    #[serde(rename = "type")]
    ty: String,
    blocks: String,
    #[serde(default)]
    values: Vec<u32>,
    #[serde(default)]
    input: Vec<u32>,
}

fn fixtures() -> Fixtures {
    serde_json::from_str(include_str!(
        "../../tests/reference/quant/quant_fixtures.json"
    ))
    .expect("fixtures parse")
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Bytes as blocks, through an 8-byte aligned copy.
fn blocks<T: Pod + Copy>(bytes: &[u8]) -> Vec<T> {
    let mut buf = vec![0u64; bytes.len().div_ceil(8)];
    // SAFETY: the buffer has at least bytes.len() bytes; u64 has no invalid bit patterns.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf.as_mut_ptr().cast::<u8>(), bytes.len())
    };
    // SAFETY: u64 buffer, every byte initialized.
    let all = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), bytes.len()) };
    cast_slice::<T>(all)
        .expect("whole, aligned blocks")
        .to_vec()
}

fn floats(bits: &[u32]) -> Vec<f32> {
    bits.iter().map(|&b| f32::from_bits(b)).collect()
}

#[test]
fn dequantizers_match_the_gguf_reference_bit_for_bit() {
    let mut seen = 0;
    for case in fixtures().cases.iter().filter(|c| c.kind == "dequantize") {
        let bytes = hex(&case.blocks);
        let want = floats(&case.values);
        let mut got = vec![f32::NAN; want.len()];
        match case.ty.as_str() {
            "Q4_K" => dequantize_q4_k(&blocks(&bytes), &mut got),
            "Q5_K" => dequantize_q5_k(&blocks(&bytes), &mut got),
            "Q6_K" => dequantize_q6_k(&blocks(&bytes), &mut got),
            "Q5_0" => dequantize_q5_0(&blocks(&bytes), &mut got),
            other => panic!("no dequantizer for {other}"),
        }
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g.to_bits(),
                w.to_bits(),
                "{} element {i}: {g} vs {w}",
                case.ty
            );
        }
        seen += 1;
    }
    assert_eq!(seen, 4);
}

#[test]
fn quantizers_match_llama_cpps_reference_byte_for_byte() {
    let mut seen = 0;
    for case in fixtures().cases.iter().filter(|c| c.kind == "quantize") {
        let x = floats(&case.input);
        let got: Vec<u8> = match case.ty.as_str() {
            "Q5_0" => block_bytes(&quantize_q5_0(&x)).to_vec(),
            "Q4_0" => block_bytes(&quantize_q4_0(&x)).to_vec(),
            "Q4_1" => block_bytes(&quantize_q4_1(&x)).to_vec(),
            "Q8_0" => block_bytes(&quantize_q8_0(&x)).to_vec(),
            other => panic!("no quantizer for {other}"),
        };
        assert_eq!(got, hex(&case.blocks), "{}", case.ty);
        seen += 1;
    }
    assert_eq!(seen, 4);
}

/// llama.cpp's synthetic data (`test-quantize-fns`): 0.1 + 2·cos(i + offset).
fn synthetic(offset: f32, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| 0.1 + 2.0 * (i as f32 + offset).cos())
        .collect()
}

/// llama.cpp's "total quantization error": √(Σ d²) / n (not the RMS, which is √(Σ d² / n)).
fn llama_total_error(a: &[f32], b: &[f32]) -> f32 {
    let sum: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    sum.sqrt() as f32 / a.len() as f32
}

fn rms(a: &[f32], b: &[f32]) -> f32 {
    let sum: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    (sum / a.len() as f64).sqrt() as f32
}

/// Round trip of every format on llama.cpp's test data: (name, round-tripped values).
fn round_trips(x: &[f32]) -> Vec<(&'static str, Vec<f32>)> {
    let n = x.len();
    let mut out = Vec::new();
    let mut y = vec![0.0; n];
    dequantize_q8_0(&quantize_q8_0(x), &mut y);
    out.push(("Q8_0", y.clone()));
    dequantize_q6_k(&quantize_q6_k(x), &mut y);
    out.push(("Q6_K", y.clone()));
    dequantize_q5_k(&quantize_q5_k(x), &mut y);
    out.push(("Q5_K", y.clone()));
    dequantize_q5_0(&quantize_q5_0(x), &mut y);
    out.push(("Q5_0", y.clone()));
    dequantize_q4_k(&quantize_q4_k(x), &mut y);
    out.push(("Q4_K", y.clone()));
    dequantize_q4_1(&quantize_q4_1(x), &mut y);
    out.push(("Q4_1", y.clone()));
    dequantize_q4_0(&quantize_q4_0(x), &mut y);
    out.push(("Q4_0", y.clone()));
    dequantize_nf4(&quantize_nf4(x), &mut y);
    out.push(("NF4", y.clone()));
    out
}

#[test]
fn round_trip_errors_are_within_llama_cpps_bound() {
    let x = synthetic(0.0, 32 * 128);
    for (name, y) in round_trips(&x) {
        let total = llama_total_error(&x, &y);
        // NF4's levels sit at quantiles of a normal distribution; a cosine wave is anything
        // but normal (most values near ±2), and NF4 misses the bound on it (≈ 0.00214).
        // It is tested on normal data below, where it was designed to shine.
        if name != "NF4" {
            assert!(total < 0.002, "{name}: total error {total}");
        }
    }
}

/// Normally distributed values (seeded Box–Muller), like trained weights.
fn normal(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = crate::sampling::Rng::new(seed);
    (0..n)
        .map(|_| {
            let (u1, u2) = (rng.next_f32().max(1e-7), rng.next_f32());
            0.02 * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
        })
        .collect()
}

#[test]
fn nf4_beats_a_uniform_4_bit_grid_of_the_same_cost_on_normal_weights() {
    let x = normal(64 * 256, 7);
    let mut y = vec![0.0; x.len()];
    dequantize_nf4(&quantize_nf4(&x), &mut y);
    let nf4 = rms(&x, &y);
    // The same cost (4 bits + one f16 absmax per 64), uniform levels −7..=7 · absmax/7:
    // QLoRA's "Int4" baseline.
    let uniform: Vec<f32> = x
        .chunks_exact(QK_NF4)
        .flat_map(|b| {
            let absmax = super::f16_to_f32(super::f32_to_f16(
                b.iter().fold(0.0f32, |m, v| m.max(v.abs())),
            ));
            b.iter()
                .map(move |v| (v / absmax * 7.0).round() * absmax / 7.0)
        })
        .collect();
    let int4 = rms(&x, &uniform);
    assert!(nf4 < int4, "NF4 {nf4} vs uniform 4-bit {int4}");
    // Per bit, llama.cpp's smaller blocks still win: Q4_0 (a scale per 32) is at least
    // comparable to NF4 (a scale per 64) here; the test records that it is not far behind.
    let err: std::collections::HashMap<&str, f32> = round_trips(&x)
        .into_iter()
        .map(|(n, y)| (n, rms(&x, &y)))
        .collect();
    assert!(err["NF4"] < 1.2 * err["Q4_0"], "{err:?}");
}

#[test]
fn more_bits_give_less_error_and_two_level_scales_beat_one() {
    let x = synthetic(0.0, 32 * 128);
    let err: std::collections::HashMap<&str, f32> = round_trips(&x)
        .into_iter()
        .map(|(n, y)| (n, rms(&x, &y)))
        .collect();
    assert!(err["Q8_0"] < err["Q6_K"], "{err:?}");
    assert!(err["Q6_K"] < err["Q5_K"], "{err:?}");
    assert!(err["Q5_K"] < err["Q4_K"], "{err:?}");
    // Q4_K (4.5 bits) is more accurate than Q4_0 (also 4.5 bits): scales per 32, a minimum,
    // and a fitted (not max-based) step.
    assert!(err["Q4_K"] < err["Q4_0"], "{err:?}");
    assert!(err["Q5_K"] < err["Q5_0"], "{err:?}");
}

#[test]
fn dot_products_are_within_llama_cpps_bound_and_match_dequantized_math() {
    let (w, a) = (synthetic(0.0, 32 * 128), synthetic(1.0, 32 * 128));
    let exact: f64 = w
        .iter()
        .zip(&a)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let acts_k = quantize_acts_q8_k(&a);
    let acts_0 = quantize_acts_q8_0(&a);
    let n = w.len() as f64;
    let mut deq_a = vec![0.0; a.len()];
    for (b, out) in acts_k.iter().zip(deq_a.chunks_exact_mut(QK_K)) {
        for (o, &q) in out.iter_mut().zip(&b.qs) {
            *o = b.d * f32::from(q);
        }
    }
    let dot_f32 = |x: &[f32], y: &[f32]| -> f64 {
        x.iter()
            .zip(y)
            .map(|(p, q)| f64::from(*p) * f64::from(*q))
            .sum()
    };
    let cases: Vec<(&str, f32, Vec<f32>)> = {
        let mut v = Vec::new();
        let mut y = vec![0.0; w.len()];
        let q4k = quantize_q4_k(&w);
        dequantize_q4_k(&q4k, &mut y);
        v.push(("Q4_K", dot_q4_k_q8_k(&q4k, &acts_k), y.clone()));
        let q5k = quantize_q5_k(&w);
        dequantize_q5_k(&q5k, &mut y);
        v.push(("Q5_K", dot_q5_k_q8_k(&q5k, &acts_k), y.clone()));
        let q6k = quantize_q6_k(&w);
        dequantize_q6_k(&q6k, &mut y);
        v.push(("Q6_K", dot_q6_k_q8_k(&q6k, &acts_k), y.clone()));
        v
    };
    for (name, dot, deq_w) in cases {
        let err = (f64::from(dot) - exact).abs() / n;
        assert!(err < 0.02, "{name}: dot error {err}");
        // The integer kernel computes exactly the dequantized product (up to f32 rounding).
        let reference = dot_f32(&deq_w, &deq_a);
        assert!(
            (f64::from(dot) - reference).abs() <= 1e-4 * reference.abs().max(1.0),
            "{name}: {dot} vs {reference}"
        );
    }
    let q5 = quantize_q5_0(&w);
    let err = (f64::from(dot_q5_0_q8_0(&q5, &acts_0)) - exact).abs() / n;
    assert!(err < 0.02, "Q5_0: dot error {err}");
    let nf4 = quantize_nf4(&w);
    let err = (f64::from(dot_nf4_f32(&nf4, &a)) - exact).abs() / n;
    assert!(err < 0.02, "NF4: dot error {err}");
}

#[test]
fn scale_packing_round_trips_every_value() {
    for v in 0..64u8 {
        let sc: [u8; 8] = std::array::from_fn(|j| (v + 7 * j as u8) % 64);
        let m: [u8; 8] = std::array::from_fn(|j| (63 - v + 5 * j as u8) % 64);
        let packed = pack_scales(&sc, &m);
        for j in 0..8 {
            assert_eq!(unpack_scales(&packed, j), (sc[j], m[j]), "v {v} j {j}");
        }
    }
}

#[test]
fn hand_made_k_blocks_have_llama_cpps_layout() {
    // Q4_K: d = 1, dmin = 0.5; sub-block 5 has scale 3 and min 2. Byte 32·2 + 7 holds
    // element 7 of sub-block 4 (low nibble) and element 7 of sub-block 5 (high nibble).
    let mut sc = [1u8; 8];
    let mut m = [0u8; 8];
    sc[5] = 3;
    m[5] = 2;
    let mut b = BlockQ4K {
        d: super::f32_to_f16(1.0),
        dmin: super::f32_to_f16(0.5),
        scales: pack_scales(&sc, &m),
        qs: [0; 128],
    };
    b.qs[64 + 7] = 0x9_4; // high nibble 9 → sub-block 5, low nibble 4 → sub-block 4
    let mut y = vec![0.0; QK_K];
    dequantize_q4_k(&[b], &mut y);
    assert_eq!(y[4 * 32 + 7], 4.0);
    assert_eq!(y[5 * 32 + 7], 3.0 * 9.0 - 0.5 * 2.0);
    assert_eq!(y[5 * 32 + 8], -1.0);

    // Q6_K: element 200 = half 1, quarter 2 (high nibbles of the first 32 ql), l = 8.
    let mut b6 = BlockQ6K {
        ql: [0; 128],
        qh: [0; 64],
        scales: [1; 16],
        d: super::f32_to_f16(0.25),
    };
    b6.ql[64 + 8] = 0xA0; // high nibble 0xA
    b6.qh[32 + 8] = 0b10 << 4; // high bits 2 in field 2
    b6.scales[200 / 16] = -2;
    dequantize_q6_k(&[b6], &mut y);
    let code = 0xA | (2 << 4); // 42
    assert_eq!(y[200], 0.25 * -2.0 * (code - 32) as f32);
    assert_eq!(y[0], 0.25 * -32.0);

    // Q5_0: element 17 takes its fifth bit from bit 17 of qh and its low bits from the high
    // nibble of qs[1].
    let mut b5 = BlockQ5_0 {
        d: super::f32_to_f16(2.0),
        qh: [0; 4],
        qs: [0; 16],
    };
    b5.qh = (1u32 << 17).to_le_bytes();
    b5.qs[1] = 0x30;
    let mut y5 = vec![0.0; 32];
    dequantize_q5_0(&[b5], &mut y5);
    assert_eq!(y5[17], 2.0 * (16 + 3 - 16) as f32);
    assert_eq!(y5[1], 2.0 * -16.0);
}

#[test]
fn quantization_is_deterministic() {
    let x = synthetic(0.5, 1024);
    assert_eq!(quantize_q4_k(&x), quantize_q4_k(&x));
    assert_eq!(quantize_q5_k(&x), quantize_q5_k(&x));
    assert_eq!(quantize_q6_k(&x), quantize_q6_k(&x));
    assert_eq!(quantize_q5_0(&x), quantize_q5_0(&x));
    assert_eq!(quantize_nf4(&x), quantize_nf4(&x));
}

#[test]
fn nf4_levels_are_qlora_s() {
    // bitsandbytes' table, as f64.
    let bnb: [f64; 16] = [
        -1.0,
        -0.6961928009986877,
        -0.5250730514526367,
        -0.39491748809814453,
        -0.28444138169288635,
        -0.18477343022823334,
        -0.09105003625154495,
        0.0,
        0.07958029955625534,
        0.16093020141124725,
        0.24611230194568634,
        0.33791524171829224,
        0.44070982933044434,
        0.5626170039176941,
        0.7229568362236023,
        1.0,
    ];
    for (ours, theirs) in NF4_LEVELS.iter().zip(bnb) {
        assert_eq!(*ours, theirs as f32);
    }
    // Each value goes to its nearest level.
    let x: Vec<f32> = (0..64).map(|i| (i as f32 / 31.5) - 1.0).collect();
    let mut y = vec![0.0; 64];
    dequantize_nf4(&quantize_nf4(&x), &mut y);
    for (v, q) in x.iter().zip(&y) {
        let best = NF4_LEVELS
            .iter()
            .map(|l| (l - v).abs())
            .fold(f32::INFINITY, f32::min);
        assert!(((q - v).abs() - best).abs() < 1e-3, "{v} → {q}");
    }
}

#[test]
fn all_zero_input_quantizes_to_zero_without_nans() {
    let x = vec![0.0; QK_K];
    let mut y = vec![1.0; QK_K];
    dequantize_q4_k(&quantize_q4_k(&x), &mut y);
    assert!(y.iter().all(|&v| v == 0.0));
    dequantize_q5_k(&quantize_q5_k(&x), &mut y);
    assert!(y.iter().all(|&v| v == 0.0));
    dequantize_q6_k(&quantize_q6_k(&x), &mut y);
    assert!(y.iter().all(|&v| v == 0.0));
    dequantize_nf4(&quantize_nf4(&x), &mut y);
    assert!(y.iter().all(|&v| v == 0.0));
    let _ = (
        BlockQ4_0 { d: 0, qs: [0; 16] },
        BlockQ4_1 {
            d: 0,
            m: 0,
            qs: [0; 16],
        },
        BlockQ8_0 { d: 0, qs: [0; 32] },
    );
}

#[test]
fn all_scales_at_once_equal_one_by_one() {
    use crate::quant::kquants::{unpack_all_scales, unpack_scales};
    for seed in 0..2000u32 {
        let q: [u8; 12] = std::array::from_fn(|i| {
            (seed.wrapping_mul(2_654_435_761).rotate_left(i as u32 * 5) >> 3) as u8
        });
        let (sc, m) = unpack_all_scales(&q);
        for j in 0..8 {
            assert_eq!((sc[j], m[j]), unpack_scales(&q, j), "{q:?} sub-block {j}");
        }
    }
}
