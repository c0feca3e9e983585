//! Shared pieces of the fuzz targets: an allocator that enforces the "never allocate
//! beyond the frame limit" promise of `ferry-protocol`, and the decode-everything
//! harness used by `decode_worker` and `decode_master`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use bytes::{Bytes, BytesMut};
use ferry_protocol::frame::split_frame;
use ferry_protocol::{ProtocolError, LENGTH_PREFIX};
use tokio_util::codec::Decoder;

/// The frame limit the decode targets run with (small, so the limits below bite).
pub const MAX_FRAME: usize = 64 * 1024;

/// No single allocation may exceed this: a decoder inflating a frame more than 4x
/// (or sizing a buffer by a length the input merely claims) aborts the run.
pub const MAX_SINGLE_ALLOC: usize = 4 * MAX_FRAME + 64 * 1024;

/// Live heap growth allowed while decoding one payload of `len` bytes. The worst
/// case is a list of empty headers: 16 wire bytes each, decoded first as 32-byte
/// borrowed entries (a `Vec` whose doubling may reach 2x that) and then as 64-byte
/// `Bytes` entries, so up to 8x the payload at the peak; text fields are copied (1x,
/// but they displace headers). The slack covers fixed-size bookkeeping.
pub fn max_decode_growth(len: usize) -> usize {
    8 * len + 4096
}

/// Inputs longer than this are skipped (their own copy would blur the limits).
pub const MAX_INPUT: usize = 2 * MAX_FRAME;

/// A `System` wrapper counting live bytes and refusing oversized allocations.
/// It aborts (libFuzzer reports a crash and keeps the input) rather than panicking,
/// since a panic inside the allocator would itself allocate.
pub struct LimitAlloc;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

#[cold]
#[inline(never)]
fn too_big(size: usize) -> ! {
    // Format into a stack buffer: no allocation on this path.
    use std::io::Write;
    let mut msg = [0u8; 160];
    let mut cur = std::io::Cursor::new(&mut msg[..]);
    let _ = write!(
        cur,
        "LimitAlloc: single allocation of {size} bytes exceeds {MAX_SINGLE_ALLOC}\n"
    );
    let n = cur.position() as usize;
    let _ = std::io::stderr().write_all(&msg[..n]);
    std::process::abort();
}

fn grew(by: usize) {
    let live = LIVE.fetch_add(by, Relaxed) + by;
    PEAK.fetch_max(live, Relaxed);
}

unsafe impl GlobalAlloc for LimitAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_SINGLE_ALLOC {
            too_big(layout.size());
        }
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_SINGLE_ALLOC {
            too_big(layout.size());
        }
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX_SINGLE_ALLOC {
            too_big(new_size);
        }
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Relaxed);
            grew(new_size);
        }
        p
    }
}

/// Runs `f` and asserts the heap grew by at most `limit` bytes at its peak.
pub fn with_live_limit<R>(limit: usize, what: &str, f: impl FnOnce() -> R) -> R {
    let before = LIVE.load(Relaxed);
    PEAK.store(before, Relaxed);
    let r = f();
    let growth = PEAK.load(Relaxed).saturating_sub(before);
    assert!(
        growth <= limit,
        "live heap grew by {growth} bytes in {what} (limit {limit})"
    );
    r
}

/// The decode-everything harness, generic over the direction:
///
/// 1. the input as a byte stream through the tokio codec, `decode` until `None` or an
///    error (then `decode_eof`), and in lockstep through `split_frame` + `decode`:
///    both must give the same messages and the same error;
/// 2. every message that decodes must re-encode to exactly its frame (the encoding is
///    canonical: no two byte strings decode to one message);
/// 3. the whole input as one payload (as if a frame held it), when it fits a frame.
///
/// Every `decode` call is held to [`max_decode_growth`] of its payload, and every
/// allocation to [`MAX_SINGLE_ALLOC`]. Nothing here may panic except the assertions.
pub fn decode_all<C, M>(
    data: &[u8],
    mut codec: C,
    decode: fn(Bytes) -> Result<M, ProtocolError>,
    encode: fn(&M, &mut BytesMut, usize) -> Result<(), ProtocolError>,
) where
    C: Decoder<Item = M, Error = ProtocolError>,
    M: PartialEq + std::fmt::Debug,
{
    if data.len() > MAX_INPUT {
        return;
    }
    let measured = |payload: Bytes| {
        let len = payload.len();
        with_live_limit(max_decode_growth(len), "decode", || decode(payload))
    };

    let mut via_codec = BytesMut::from(data);
    let mut via_frame = BytesMut::from(data);
    loop {
        let a = codec.decode(&mut via_codec);
        let b = split_frame(&mut via_frame, MAX_FRAME).and_then(|p| match p {
            Some(payload) => {
                assert!(!payload.is_empty() && payload.len() <= MAX_FRAME);
                let m = measured(payload.clone())?;
                check_canonical(&m, &payload, encode);
                Ok(Some(m))
            }
            None => Ok(None),
        });
        match (a, b) {
            (Ok(Some(a)), Ok(Some(b))) => assert_eq!(a, b, "codec and frame functions disagree"),
            (Ok(None), Ok(None)) => {
                assert_eq!(via_codec, via_frame);
                // Whatever is left is an incomplete frame: decode_eof must refuse it
                // (or, with nothing left, report a clean end).
                match codec.decode_eof(&mut via_codec) {
                    Ok(None) => assert!(via_codec.is_empty(), "decode_eof accepted leftovers"),
                    Ok(Some(m)) => panic!("decode_eof produced {m:?} after decode said None"),
                    Err(_) => {}
                }
                break;
            }
            (Err(a), Err(b)) => {
                assert_eq!(a.to_string(), b.to_string(), "different errors");
                break;
            }
            (a, b) => panic!("codec gave {a:?}, frame functions gave {b:?}"),
        }
    }

    if !data.is_empty() && data.len() <= MAX_FRAME {
        let payload = Bytes::copy_from_slice(data);
        if let Ok(m) = measured(payload.clone()) {
            check_canonical(&m, &payload, encode);
        }
    }
}

fn check_canonical<M: std::fmt::Debug>(
    m: &M,
    payload: &Bytes,
    encode: fn(&M, &mut BytesMut, usize) -> Result<(), ProtocolError>,
) {
    let mut out = BytesMut::new();
    encode(m, &mut out, MAX_FRAME).expect("a decoded message re-encodes within the limit");
    assert_eq!(
        &out[LENGTH_PREFIX..],
        &payload[..],
        "{m:?} re-encodes to different bytes"
    );
    assert_eq!(&out[..LENGTH_PREFIX], &(payload.len() as u32).to_be_bytes());
}
