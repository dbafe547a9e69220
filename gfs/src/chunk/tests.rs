//! Store-level tests on real files in a fresh directory under the system temp dir.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::test_support::TempDir;

const H: ChunkHandle = ChunkHandle(0x00c0_ffee);
const V1: ChunkVersion = ChunkVersion(1);
const BS: usize = BLOCK_SIZE as usize;

/// Bytes that differ from block to block and from seed to seed, so a misplaced block shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add((i / 251) as u8).wrapping_add(seed)).collect()
}

async fn store_with(dir: &TempDir, handle: ChunkHandle) -> ChunkStore {
    let store = ChunkStore::open(dir.path()).await.expect("open");
    store.create(handle, V1).await.expect("create");
    store
}

/// Compares two buffers, naming the first difference instead of printing megabytes.
#[track_caller]
fn assert_same(got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len(), "length");
    if let Some(at) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("first difference at byte {at} (block {}): {} != {}", at / BS, got[at], want[at]);
    }
}

fn flip_byte(path: &Path, at: u64) {
    let file = OpenOptions::new().read(true).write(true).open(path).expect("open data file");
    let mut byte = [0];
    file.read_exact_at(&mut byte, at).expect("read byte");
    byte[0] ^= 0x01;
    file.write_all_at(&byte, at).expect("write byte");
}

fn data_file(dir: &TempDir, handle: ChunkHandle) -> PathBuf {
    dir.file(&format!("{handle}.chunk"))
}

fn meta_file(dir: &TempDir, handle: ChunkHandle) -> PathBuf {
    dir.file(&format!("{handle}.meta"))
}

#[tokio::test]
async fn round_trip_across_block_boundaries_and_unaligned_offsets() {
    let dir = TempDir::new("round-trip");
    let store = store_with(&dir, H).await;
    let mut expected = Vec::new();
    // Pieces whose edges fall inside blocks, exactly on block edges, and that span several blocks.
    for (i, len) in [1, BS - 2, 3, 3 * BS + 17, BS, 5000, 2 * BS - 5000].into_iter().enumerate() {
        let piece = pattern(len, i as u8);
        let info = store.write(H, V1, expected.len() as u64, Bytes::from(piece.clone())).await.expect("append");
        expected.extend_from_slice(&piece);
        assert_eq!(info, ChunkInfo { handle: H, version: V1, length: expected.len() as u64 });
    }
    assert_eq!(fs::metadata(data_file(&dir, H)).expect("stat").len(), expected.len() as u64);
    for (offset, len) in
        [(0, expected.len()), (1, BS), (BS - 1, 2), (BS, BS), (BS + 7, 3 * BS), (expected.len() - 1, 1)]
    {
        let got = store.read(H, offset as u64, len as u64).await.expect("read");
        assert_same(&got, &expected[offset..offset + len]);
    }
    store.verify(H).await.expect("every block checks out");
}

#[tokio::test]
async fn partial_block_overwrites_keep_checksums_right() {
    let dir = TempDir::new("overwrite");
    let store = store_with(&dir, H).await;
    let mut expected = pattern(4 * BS + 100, 1);
    store.write(H, V1, 0, Bytes::from(expected.clone())).await.expect("write");
    // Inside one block, across one edge, across two edges, and over the partial last block.
    for (i, (offset, len)) in [(10, 20), (BS - 3, 6), (BS + 100, 2 * BS), (4 * BS + 50, 30)].into_iter().enumerate() {
        let patch = pattern(len, 100 + i as u8);
        store.write(H, V1, offset as u64, Bytes::from(patch.clone())).await.expect("overwrite");
        expected[offset..offset + len].copy_from_slice(&patch);
    }
    assert_eq!(store.stat(H).map(|info| info.length), Some(expected.len() as u64), "overwrites do not grow it");
    store.verify(H).await.expect("checksums match the patched blocks");
    assert_same(&store.read(H, 0, CHUNK_SIZE).await.expect("read"), &expected);
    drop(store);
    let store = ChunkStore::open(dir.path()).await.expect("reopen");
    store.verify(H).await.expect("and so do the persisted ones");
}

#[tokio::test]
async fn write_past_the_end_zero_fills_the_gap() {
    let dir = TempDir::new("gap");
    let store = store_with(&dir, H).await;
    store.write(H, V1, 0, Bytes::from_static(b"head")).await.expect("write");
    let tail = pattern(10, 9);
    let info = store.write(H, V1, 3 * BLOCK_SIZE + 5, Bytes::from(tail.clone())).await.expect("write past end");
    assert_eq!(info.length, 3 * BLOCK_SIZE + 15);
    let all = store.read(H, 0, info.length).await.expect("read");
    assert_eq!(&all[..4], b"head");
    assert!(all[4..3 * BS + 5].iter().all(|&b| b == 0));
    assert_same(&all[3 * BS + 5..], &tail);
    store.verify(H).await.expect("verify");
}

#[tokio::test]
async fn flipped_byte_on_disk_is_corruption_of_its_block_only() {
    let dir = TempDir::new("corrupt");
    let store = store_with(&dir, H).await;
    let data = pattern(4 * BS, 3);
    store.write(H, V1, 0, Bytes::from(data.clone())).await.expect("write");
    flip_byte(&data_file(&dir, H), 2 * BLOCK_SIZE + 1234);

    for (offset, len) in [(2 * BS + 1234, 1), (2 * BS, BS), (BS, 3 * BS), (0, 4 * BS)] {
        let err = store.read(H, offset as u64, len as u64).await.expect_err("corrupt block read");
        assert!(matches!(err, ChunkError::Corrupt { handle: H, block: 2 }), "{err}");
    }
    for (offset, len) in [(0, 2 * BS), (3 * BS, BS), (BS + 5, BS - 5)] {
        let got = store.read(H, offset as u64, len as u64).await.expect("a good block still reads");
        assert_same(&got, &data[offset..offset + len]);
    }
    let err = store.verify(H).await.expect_err("verify finds it");
    assert!(matches!(err, ChunkError::Corrupt { block: 2, .. }), "{err}");
    assert!(err.to_string().contains("block 2"), "{err}");
    // A partial write into the bad block must not re-checksum (and so bless) the corruption around it.
    let err = store.write(H, V1, 2 * BLOCK_SIZE, Bytes::from_static(b"x")).await.expect_err("refused");
    assert!(matches!(err, ChunkError::Corrupt { block: 2, .. }), "{err}");
    // Replacing the whole block is fine: nothing of the bad bytes survives.
    store.write(H, V1, 2 * BLOCK_SIZE, Bytes::from(data[2 * BS..3 * BS].to_vec())).await.expect("whole block");
    store.verify(H).await.expect("repaired");
}

#[tokio::test]
async fn truncated_data_file_is_corruption() {
    let dir = TempDir::new("truncated");
    let store = store_with(&dir, H).await;
    store.write(H, V1, 0, Bytes::from(pattern(3 * BS, 4))).await.expect("write");
    OpenOptions::new().write(true).open(data_file(&dir, H)).expect("open").set_len(BLOCK_SIZE + 10).expect("truncate");
    let err = store.read(H, 0, 3 * BLOCK_SIZE).await.expect_err("short");
    assert!(matches!(err, ChunkError::Corrupt { block: 1, .. }), "{err}");
    assert!(matches!(store.verify(H).await, Err(ChunkError::Corrupt { block: 1, .. })));
    store.read(H, 0, BLOCK_SIZE).await.expect("block 0 is whole");
}

#[tokio::test]
async fn stale_version_writes_are_refused() {
    let dir = TempDir::new("stale");
    let store = store_with(&dir, H).await;
    store.write(H, V1, 0, Bytes::from_static(b"one")).await.expect("write");
    store.set_version(H, ChunkVersion(2)).await.expect("new lease");
    for version in [ChunkVersion(1), ChunkVersion(3)] {
        let err = store.write(H, version, 0, Bytes::from_static(b"two")).await.expect_err("stale");
        assert!(matches!(err, ChunkError::StaleVersion { stored: ChunkVersion(2), .. }), "{err}");
    }
    assert_eq!(&store.read(H, 0, 3).await.expect("read")[..], b"one", "nothing written");
    store.write(H, ChunkVersion(2), 0, Bytes::from_static(b"two")).await.expect("current version writes");
}

#[tokio::test]
async fn version_only_goes_forward() {
    let dir = TempDir::new("version");
    let store = store_with(&dir, H).await;
    assert_eq!(store.set_version(H, ChunkVersion(5)).await.expect("up").version, ChunkVersion(5));
    assert_eq!(store.set_version(H, ChunkVersion(5)).await.expect("same again").version, ChunkVersion(5));
    let err = store.set_version(H, ChunkVersion(4)).await.expect_err("down");
    assert!(matches!(err, ChunkError::VersionRegression { current: ChunkVersion(5), requested: ChunkVersion(4), .. }));
    drop(store);
    let store = ChunkStore::open(dir.path()).await.expect("reopen");
    assert_eq!(store.stat(H).map(|info| info.version), Some(ChunkVersion(5)), "persisted");
}

#[tokio::test]
async fn reopen_sees_identical_state() {
    let dir = TempDir::new("reopen");
    let store = ChunkStore::open(dir.path()).await.expect("open");
    let mut contents = Vec::new();
    for i in 0..5u64 {
        let handle = ChunkHandle(i << 40 | 7);
        store.create(handle, ChunkVersion(i)).await.expect("create");
        let data = pattern((i as usize) * 70_001, i as u8);
        store.write(handle, ChunkVersion(i), 0, Bytes::from(data.clone())).await.expect("write");
        contents.push((handle, data));
    }
    store.delete(ChunkHandle(2 << 40 | 7)).await.expect("delete");
    contents.remove(2);
    let before = store.report();
    assert_eq!(before.len(), 4);
    drop(store);

    let store = ChunkStore::open(dir.path()).await.expect("reopen");
    let report = store.open_report();
    assert_eq!((report.served, report.quarantined.len(), report.removed_tmp.len()), (4, 0, 0));
    assert_eq!(store.report(), before);
    for (handle, data) in contents {
        assert_same(&store.read(handle, 0, CHUNK_SIZE).await.expect("read"), &data);
        store.verify(handle).await.expect("verify");
    }
}

#[tokio::test]
async fn crash_before_metadata_rename_is_detected_on_open() {
    let dir = TempDir::new("crash");
    let (grown, overwritten, untouched) = (ChunkHandle(1), ChunkHandle(2), ChunkHandle(3));
    let store = ChunkStore::open(dir.path()).await.expect("open");
    for handle in [grown, overwritten, untouched] {
        store.create(handle, V1).await.expect("create");
        store.write(handle, V1, 0, Bytes::from(pattern(2 * BS + 10, 5))).await.expect("write");
    }
    drop(store);
    // What a crash after the data write and before the metadata rename leaves: new data, old metadata,
    // and (if the crash came after the tmp file was created) a `.meta.tmp`, here even a torn one.
    let grown_file = OpenOptions::new().write(true).open(data_file(&dir, grown)).expect("open");
    grown_file.write_all_at(b"appended but never acknowledged", 2 * BLOCK_SIZE + 10).expect("grow");
    fs::write(dir.file(&format!("{grown}.meta.tmp")), b"torn").expect("tmp");
    flip_byte(&data_file(&dir, overwritten), 5);
    fs::write(dir.file(&format!("{overwritten}.meta.tmp")), b"").expect("tmp");
    fs::write(dir.file(&format!("{untouched}.meta.tmp")), b"").expect("tmp");
    fs::write(dir.file("stray.tmp"), b"").expect("tmp");

    let store = ChunkStore::open(dir.path()).await.expect("reopen");
    let report = store.open_report().clone();
    assert_eq!(report.served, 1, "{report:?}");
    assert_eq!(report.removed_tmp.len(), 4, "{report:?}");
    assert!(fs::read_dir(dir.path()).expect("list").all(|e| !e
        .expect("entry")
        .path()
        .to_string_lossy()
        .ends_with(".tmp")));
    assert_eq!(
        report.quarantined,
        vec![
            Quarantined {
                handle: grown,
                reason: QuarantineReason::LengthMismatch { meta: 2 * BLOCK_SIZE + 10, data: 2 * BLOCK_SIZE + 41 }
            },
            Quarantined { handle: overwritten, reason: QuarantineReason::Corrupt { block: 0 } },
        ]
    );
    assert_eq!(store.quarantined(), report.quarantined);
    assert_eq!(store.report().iter().map(|info| info.handle).collect::<Vec<_>>(), vec![untouched]);
    let err = store.read(grown, 0, 1).await.expect_err("not served");
    assert!(matches!(err, ChunkError::Quarantined { handle, .. } if handle == grown), "{err}");
    assert!(store.stat(grown).is_none());
    assert!(matches!(store.create(grown, V1).await, Err(ChunkError::Exists(_))), "the handle stays taken");
    store.delete(grown).await.expect("the master's delete order clears it");
    assert!(store.quarantined().iter().all(|q| q.handle != grown));
    assert!(!data_file(&dir, grown).exists() && !meta_file(&dir, grown).exists());
}

#[tokio::test]
async fn bad_or_missing_files_are_quarantined_not_dropped() {
    let dir = TempDir::new("bad-meta");
    let store = ChunkStore::open(dir.path()).await.expect("open");
    let handles: Vec<ChunkHandle> = (10..15).map(ChunkHandle).collect();
    for &handle in &handles {
        store.create(handle, V1).await.expect("create");
        store.write(handle, V1, 0, Bytes::from(pattern(BS + 1, 6))).await.expect("write");
    }
    drop(store);
    let meta = fs::read(meta_file(&dir, handles[0])).expect("read meta");
    fs::write(meta_file(&dir, handles[0]), &meta[..meta.len() - 3]).expect("truncate meta");
    flip_byte(&meta_file(&dir, handles[1]), 20);
    fs::remove_file(meta_file(&dir, handles[2])).expect("remove meta");
    fs::remove_file(data_file(&dir, handles[3])).expect("remove data");
    // Another chunk's metadata under this chunk's name.
    fs::copy(meta_file(&dir, handles[4]), meta_file(&dir, ChunkHandle(99))).expect("copy");
    fs::copy(data_file(&dir, handles[4]), data_file(&dir, ChunkHandle(99))).expect("copy");
    fs::write(dir.file("notes.txt"), b"operator notes").expect("stray");

    let store = ChunkStore::open(dir.path()).await.expect("reopen");
    let report = store.open_report();
    assert_eq!(report.served, 1);
    assert_eq!(report.ignored, vec![dir.file("notes.txt")]);
    let reasons: Vec<(u64, QuarantineReason)> =
        report.quarantined.iter().map(|q| (q.handle.0, q.reason.clone())).collect();
    assert_eq!(reasons.len(), 5, "{reasons:?}");
    assert!(
        matches!(&reasons[0], (10, QuarantineReason::BadMeta(why)) if why.contains("bytes") || why.contains("checksum"))
    );
    assert!(matches!(&reasons[1], (11, QuarantineReason::BadMeta(why)) if why.contains("checksum")));
    assert_eq!(reasons[2], (12, QuarantineReason::MissingMeta));
    assert_eq!(reasons[3], (13, QuarantineReason::MissingData));
    assert!(matches!(&reasons[4], (99, QuarantineReason::BadMeta(why)) if why.contains("describes chunk")));
    assert!(dir.file("notes.txt").exists(), "not ours, left alone");
    for q in &report.quarantined {
        store.delete(q.handle).await.expect("delete quarantined");
    }
    assert!(store.quarantined().is_empty());
}

#[tokio::test]
async fn a_quarantined_chunk_stays_out_of_service_across_a_reopen_until_deleted() {
    let dir = TempDir::new("quarantine");
    let (other, leftover) = (ChunkHandle(H.0 + 1), ChunkHandle(H.0 + 2));
    let store = store_with(&dir, H).await;
    store.create(other, V1).await.expect("create the other");
    store.write(H, V1, 0, Bytes::from(pattern(3 * BS, 1))).await.expect("write");
    store.quarantine(H, QuarantineReason::Corrupt { block: 2 }).await.expect("quarantine");
    store.quarantine(H, QuarantineReason::MissingMeta).await.expect("again: the first reason stays");

    let out = |store: &ChunkStore| (store.report().iter().map(|c| c.handle).collect::<Vec<_>>(), store.quarantined());
    let first = vec![Quarantined { handle: H, reason: QuarantineReason::Corrupt { block: 2 } }];
    assert_eq!(out(&store), (vec![other], first));
    assert!(store.stat(H).is_none());
    let refused = store.read(H, 0, 10).await.expect_err("a quarantined chunk is not read");
    assert!(matches!(refused, ChunkError::Quarantined { .. }), "{refused}");
    assert!(store.write(H, V1, 0, Bytes::from_static(b"x")).await.is_err(), "nor written");
    assert!(matches!(store.quarantine(leftover, QuarantineReason::MissingMeta).await, Err(ChunkError::NotFound(_))));

    // Its files look consistent, but the mark keeps it out after a restart.
    drop(store);
    fs::write(dir.file(&format!("{leftover}.quarantined")), "a mark whose chunk is gone").expect("lone mark");
    let store = ChunkStore::open(dir.path()).await.expect("reopen");
    let marked =
        vec![Quarantined { handle: H, reason: QuarantineReason::Marked("block 2 does not match its checksum".into()) }];
    assert_eq!(out(&store), (vec![other], marked));
    assert_eq!(store.open_report().removed_tmp, vec![dir.file(&format!("{leftover}.quarantined"))]);

    store.delete(H).await.expect("delete");
    assert!(store.quarantined().is_empty());
    let left: Vec<String> = fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(&H.to_string()))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    store.create(H, V1).await.expect("the handle is free again");
}

#[tokio::test]
async fn writes_past_the_chunk_size_are_refused() {
    let dir = TempDir::new("too-far");
    let store = store_with(&dir, H).await;
    for (offset, len) in [(CHUNK_SIZE - 10, 11), (CHUNK_SIZE, 1), (u64::MAX - 2, 4), (0, CHUNK_SIZE as usize + 1)] {
        let data = Bytes::from(vec![7; len]);
        let err = store.write(H, V1, offset, data).await.expect_err("past the end");
        assert!(matches!(err, ChunkError::OutOfRange { limit: CHUNK_SIZE, .. }), "{err}");
    }
    assert_eq!(store.stat(H).map(|info| info.length), Some(0));
    // Right up to the last byte is allowed (a sparse file: the gap reads as zeros).
    let info = store.write(H, V1, CHUNK_SIZE - 10, Bytes::from_static(b"0123456789")).await.expect("last bytes");
    assert_eq!(info.length, CHUNK_SIZE);
    assert_eq!(&store.read(H, CHUNK_SIZE - 10, 100).await.expect("read")[..], b"0123456789");
    assert_eq!(&store.read(H, BLOCK_SIZE * 7 + 3, 4).await.expect("read gap")[..], &[0; 4]);
}

#[tokio::test]
async fn reads_are_clamped_at_the_length_and_refused_past_it() {
    let dir = TempDir::new("clamp");
    let store = store_with(&dir, H).await;
    store.write(H, V1, 0, Bytes::from_static(b"0123456789")).await.expect("write");
    assert_eq!(&store.read(H, 4, 1000).await.expect("clamped")[..], b"456789");
    assert!(store.read(H, 10, 5).await.expect("at the end").is_empty());
    assert!(store.read(H, 3, 0).await.expect("empty").is_empty());
    let err = store.read(H, 11, 1).await.expect_err("past the length");
    assert!(matches!(err, ChunkError::OutOfRange { limit: 10, .. }), "{err}");
    for (offset, len) in [(0, CHUNK_SIZE + 1), (CHUNK_SIZE + 1, 0), (u64::MAX, u64::MAX)] {
        let err = store.read(H, offset, len).await.expect_err("unbounded");
        assert!(matches!(err, ChunkError::OutOfRange { limit: CHUNK_SIZE, .. }), "{err}");
    }
}

#[tokio::test]
async fn create_delete_and_missing_chunks() {
    let dir = TempDir::new("lifecycle");
    let store = store_with(&dir, H).await;
    assert!(matches!(store.create(H, V1).await, Err(ChunkError::Exists(H))));
    assert_eq!(store.stat(H), Some(ChunkInfo { handle: H, version: V1, length: 0 }));
    store.write(H, V1, 0, Bytes::from_static(b"data")).await.expect("write");
    store.delete(H).await.expect("delete");
    assert!(!data_file(&dir, H).exists() && !meta_file(&dir, H).exists());
    assert!(store.stat(H).is_none() && store.report().is_empty());
    assert!(matches!(store.read(H, 0, 1).await, Err(ChunkError::NotFound(H))));
    assert!(matches!(store.write(H, V1, 0, Bytes::new()).await, Err(ChunkError::NotFound(H))));
    assert!(matches!(store.delete(H).await, Err(ChunkError::NotFound(H))));
    let info = store.create(H, ChunkVersion(9)).await.expect("the handle can be reused");
    assert_eq!(info, ChunkInfo { handle: H, version: ChunkVersion(9), length: 0 });
    assert!(store.read(H, 0, 10).await.expect("empty chunk").is_empty());
}

#[tokio::test]
async fn a_directory_is_opened_by_one_store_at_a_time() {
    let dir = TempDir::new("lock");
    let store = ChunkStore::open(dir.path()).await.expect("open");
    assert!(matches!(ChunkStore::open(dir.path()).await, Err(ChunkError::Locked(_))));
    drop(store);
    ChunkStore::open(dir.path()).await.expect("free again once dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_to_different_chunks() {
    let dir = TempDir::new("parallel");
    let store = ChunkStore::open(dir.path()).await.expect("open");
    let mut tasks = Vec::new();
    for i in 0..8u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let handle = ChunkHandle(100 + i);
            store.create(handle, V1).await.expect("create");
            let data = pattern(3 * BS + 1000, i as u8);
            for piece in data.chunks(10_000).enumerate() {
                let (n, bytes) = piece;
                store.write(handle, V1, (n * 10_000) as u64, Bytes::from(bytes.to_vec())).await.expect("write");
            }
            (handle, data)
        }));
    }
    for task in tasks {
        let (handle, data) = task.await.expect("task");
        assert_same(&store.read(handle, 0, CHUNK_SIZE).await.expect("read"), &data);
        store.verify(handle).await.expect("verify");
    }
    assert_eq!(store.report().len(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_to_one_chunk_are_serialized() {
    let dir = TempDir::new("serialized");
    let store = store_with(&dir, H).await;
    let region = 3 * BS + 333;
    // Whole-region overwrites: serialized, the result is entirely one writer's bytes.
    let overwrites: Vec<_> = (0..8u8)
        .map(|seed| {
            let store = store.clone();
            tokio::spawn(async move { store.write(H, V1, 0, Bytes::from(vec![seed; region])).await })
        })
        .collect();
    for task in overwrites {
        task.await.expect("task").expect("write");
    }
    let all = store.read(H, 0, region as u64).await.expect("read");
    assert!(all.iter().all(|&b| b == all[0]), "one writer's bytes throughout");
    // Small unaligned writes sharing blocks: each read-modify of a shared block must see the last one.
    let pieces: Vec<_> = (0..64usize)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let (offset, bytes) = (i * 3001, pattern(3001, i as u8));
                store.write(H, V1, offset as u64, Bytes::from(bytes.clone())).await.expect("write");
                (offset, bytes)
            })
        })
        .collect();
    let mut expected = all.to_vec();
    expected.resize(expected.len().max(64 * 3001), 0);
    for task in pieces {
        let (offset, bytes) = task.await.expect("task");
        expected[offset..offset + bytes.len()].copy_from_slice(&bytes);
    }
    store.verify(H).await.expect("every checksum matches");
    assert_same(&store.read(H, 0, CHUNK_SIZE).await.expect("read"), &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_chunk_does_not_hold_up_the_others() {
    let dir = TempDir::new("independent");
    let (busy, other) = (ChunkHandle(1), ChunkHandle(2));
    let store = ChunkStore::open(dir.path()).await.expect("open");
    store.create(busy, V1).await.expect("create");
    store.create(other, V1).await.expect("create");
    let held = store.lock_of(busy).expect("lock").write_owned().await;
    let quick = Duration::from_secs(30);
    tokio::time::timeout(quick, store.write(other, V1, 0, Bytes::from_static(b"free")))
        .await
        .expect("not held up")
        .expect("write");
    let blocked =
        tokio::time::timeout(Duration::from_millis(200), store.write(busy, V1, 0, Bytes::from_static(b"wait"))).await;
    assert!(blocked.is_err(), "a write to the busy chunk waits for its lock");
    assert_eq!(store.stat(busy).map(|info| info.length), Some(0), "stat does not wait for the lock");
    drop(held);
    tokio::time::timeout(quick, store.write(busy, V1, 0, Bytes::from_static(b"done")))
        .await
        .expect("released")
        .expect("write");
}

#[tokio::test]
async fn a_bounded_delete_keeps_a_newer_copy_and_removes_an_older_or_quarantined_one() {
    let dir = TempDir::new("bounded-delete");
    let (newer, quarantined) = (ChunkHandle(H.0 + 1), ChunkHandle(H.0 + 2));
    let store = store_with(&dir, H).await;
    store.create(newer, V1).await.expect("create");
    store.set_version(newer, ChunkVersion(3)).await.expect("raise");
    store.create(quarantined, ChunkVersion(9)).await.expect("create");
    store.quarantine(quarantined, QuarantineReason::Corrupt { block: 0 }).await.expect("quarantine");

    // An order to delete "version 2 or older" finds version 3: the copy stays, its version is named.
    assert_eq!(store.delete_at_most(newer, Some(ChunkVersion(2))).await.expect("kept"), Some(ChunkVersion(3)));
    assert_eq!(store.stat(newer).map(|c| c.version), Some(ChunkVersion(3)));
    assert_eq!(store.delete_at_most(newer, Some(ChunkVersion(3))).await.expect("deleted"), None);
    assert!(store.stat(newer).is_none());
    // Unbounded, and quarantined copies whatever the bound: removed.
    assert_eq!(store.delete_at_most(H, None).await.expect("deleted"), None);
    assert_eq!(store.delete_at_most(quarantined, Some(ChunkVersion(1))).await.expect("deleted"), None);
    assert!(store.report().is_empty() && store.quarantined().is_empty());
    assert!(matches!(store.delete_at_most(H, None).await, Err(ChunkError::NotFound(_))));
}
