//! The heap trim on the real malloc: freed memory scattered between live chunks (what a
//! burst leaves) becomes resident-free, and live chunks keep their contents. Its own
//! test binary, so no other test allocates while the resident size is compared.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use banger_controller::heap::{trim, ResidentSize};

const MIB: u64 = 1 << 20;
/// Size of each small allocation (below malloc's mmap threshold: it lands in an arena).
const CHUNK: usize = 1000;
/// Allocations made (about 48 MiB).
const CHUNKS: usize = 48 * 1024 * 1024 / CHUNK;
/// One allocation in this many stays live, so free() cannot give back the heap's top.
const KEEP_EVERY: usize = 64;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn trim_gives_back_free_pages_between_live_chunks() {
    let resident = ResidentSize::open().unwrap();
    let mut chunks: Vec<Box<[u8]>> = (0..CHUNKS)
        .map(|i| vec![(i % 251) as u8; CHUNK].into_boxed_slice())
        .collect();
    let full = resident.bytes().unwrap();
    let mut index = 0;
    chunks.retain(|_| {
        index += 1;
        (index - 1) % KEEP_EVERY == 0
    });
    let freed = resident.bytes().unwrap();
    assert!(trim(), "malloc_trim gave nothing back");
    let trimmed = resident.bytes().unwrap();
    // Nearly all of the ~47 MiB freed was still resident before the trim, and is not
    // after it.
    assert!(
        freed > trimmed + 32 * MIB,
        "resident: {} MiB full, {} MiB after free, {} MiB after trim",
        full / MIB,
        freed / MIB,
        trimmed / MIB
    );
    for (k, chunk) in chunks.iter().enumerate() {
        let i = k * KEEP_EVERY;
        assert!(chunk.iter().all(|b| *b == (i % 251) as u8), "chunk {i}");
    }
}
