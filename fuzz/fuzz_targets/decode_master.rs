//! Arbitrary bytes from the master, as a worker reads them: must never panic, never
//! allocate beyond the limits in `ferry_protocol_fuzz`, and every message that decodes
//! must re-encode to exactly its bytes.
#![no_main]

use ferry_protocol::codec::WorkerCodec;
use ferry_protocol::frame::{decode_master, encode_master};
use ferry_protocol_fuzz::{decode_all, LimitAlloc, MAX_FRAME};
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: LimitAlloc = LimitAlloc;

fuzz_target!(|data: &[u8]| {
    decode_all(
        data,
        WorkerCodec::new(MAX_FRAME),
        decode_master,
        encode_master,
    );
});
