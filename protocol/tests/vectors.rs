//! The wire format, pinned: each file in `vectors/` holds one framed message in hex
//! (whitespace and `#` comments ignored). Decoding the bytes must give the sample value
//! and encoding the value must give the bytes, so any change to the format fails here.
//! `FERRY_BLESS=1 cargo test -p ferry-protocol --test vectors` rewrites the files after
//! an intended change (then bump `PROTOCOL_VERSION` and update SPEC.md).

mod common;

use bytes::BytesMut;
use ferry_protocol::frame::*;
use ferry_protocol::DEFAULT_MAX_FRAME_SIZE as MAX;
use std::path::PathBuf;

fn path(stem: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("vectors")
        .join(format!("{stem}.hex"))
}

fn to_hex(bytes: &[u8]) -> String {
    let body: Vec<String> = bytes
        .chunks(16)
        .map(|line| {
            line.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    body.join("\n") + "\n"
}

fn from_hex(text: &str) -> Vec<u8> {
    let digits: String = text
        .lines()
        .map(|l| l.split('#').next().unwrap())
        .collect::<String>()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    assert!(digits.len().is_multiple_of(2), "odd number of hex digits");
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap())
        .collect()
}

fn check(stem: &str, encoded: BytesMut, what: &str) -> Vec<u8> {
    let p = path(stem);
    if std::env::var_os("FERRY_BLESS").is_some() {
        std::fs::write(&p, format!("# {what}\n{}", to_hex(&encoded))).unwrap();
    }
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let want = from_hex(&text);
    assert_eq!(
        to_hex(&encoded),
        to_hex(&want),
        "encoding of {stem} differs from its vector"
    );
    want
}

#[test]
fn worker_vectors_both_ways() {
    for (stem, msg) in common::worker_samples() {
        let mut buf = BytesMut::new();
        encode_worker(&msg, &mut buf, MAX).unwrap();
        let want = check(stem, buf, &format!("{msg:?}"));
        let mut src = BytesMut::from(&want[..]);
        let payload = split_frame(&mut src, MAX).unwrap().unwrap();
        assert!(src.is_empty());
        assert_eq!(
            decode_worker(payload).unwrap(),
            msg,
            "decoding vector {stem}"
        );
    }
}

#[test]
fn master_vectors_both_ways() {
    for (stem, msg) in common::master_samples() {
        let mut buf = BytesMut::new();
        encode_master(&msg, &mut buf, MAX).unwrap();
        let want = check(stem, buf, &format!("{msg:?}"));
        let mut src = BytesMut::from(&want[..]);
        let payload = split_frame(&mut src, MAX).unwrap().unwrap();
        assert!(src.is_empty());
        assert_eq!(
            decode_master(payload).unwrap(),
            msg,
            "decoding vector {stem}"
        );
    }
}

#[test]
fn every_vector_file_is_checked() {
    let known: Vec<String> = common::worker_samples()
        .iter()
        .map(|(s, _)| s.to_string())
        .chain(common::master_samples().iter().map(|(s, _)| s.to_string()))
        .collect();
    for entry in std::fs::read_dir(path("x").parent().unwrap()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let stem = name.strip_suffix(".hex").unwrap_or(&name);
        assert!(
            known.iter().any(|k| k == stem),
            "vector {name} has no sample in tests/common.rs"
        );
    }
}
