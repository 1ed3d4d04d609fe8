//! Storage backends keep what a file writer was given, in order, whatever
//! the sizes of its pieces (small ones are buffered, large ones go to the
//! backend as they are).

use bytes::Bytes;
use diagon::storage::Storage;

/// Pieces from 1 byte to 3 MiB, each filled with its own pattern.
fn pieces() -> Vec<Bytes> {
    let sizes = [
        10,
        3 << 20,
        1,
        700_000,
        700_000,
        1 << 20,
        5,
        (1 << 20) - 1,
        2 << 20,
    ];
    sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| Bytes::from((0..n).map(|j| (i * 31 + j) as u8).collect::<Vec<u8>>()))
        .collect()
}

async fn write_and_read_back(storage: &Storage) {
    let pieces = pieces();
    let mut writer = storage.create("mixed.bin").await.unwrap();
    for piece in &pieces {
        writer.write(piece.clone()).await.unwrap();
    }
    let expected: Vec<u8> = pieces.concat();
    assert_eq!(writer.finish().await.unwrap(), expected.len() as u64);
    let read = storage.get("mixed.bin").await.unwrap();
    assert_eq!(read.len(), expected.len());
    assert!(read == expected, "{} changed the bytes", storage.display());
    let range = storage
        .get_range("mixed.bin", 1_000..5_000_000, expected.len() as u64)
        .await
        .unwrap();
    assert!(range == expected[1_000..5_000_000]);
}

#[tokio::test]
async fn a_file_writer_keeps_pieces_of_every_size_in_order() {
    let dir = tempfile::tempdir().unwrap();
    write_and_read_back(&Storage::local(dir.path()).unwrap()).await;
    write_and_read_back(&Storage::memory("memory")).await;
}

/// The object-store backend against an S3 server on loopback: pieces of
/// every size (a 12 MiB file goes up as a multipart upload), range reads,
/// create-if-absent, listings and deletes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_object_store_backend_works_against_an_s3_server() {
    let server = crate::s3::S3Server::start().await;
    let storage = Storage::new(
        server.store(),
        object_store::path::Path::from("t"),
        server.url("t"),
    );
    write_and_read_back(&storage).await;
    let mut big = storage.create("big.bin").await.unwrap();
    for i in 0..12u8 {
        big.write(Bytes::from(vec![i; 1 << 20])).await.unwrap();
    }
    assert_eq!(big.finish().await.unwrap(), 12 << 20);
    let tail = storage
        .get_range("big.bin", (11 << 20) + 5..(11 << 20) + 9, 12 << 20)
        .await
        .unwrap();
    assert_eq!(tail.as_ref(), &[11u8; 4]);
    assert!(storage.put_if_absent("_log/1", "a").await.unwrap());
    assert!(!storage.put_if_absent("_log/1", "b").await.unwrap());
    assert_eq!(storage.get("_log/1").await.unwrap().as_ref(), b"a");
    let mut names: Vec<String> = storage
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect();
    names.sort();
    assert_eq!(names, ["_log/1", "big.bin", "mixed.bin"]);
    assert_eq!(server.files("t"), ["t/_log/1", "t/big.bin", "t/mixed.bin"]);
    storage.delete("big.bin").await.unwrap();
    assert_eq!(storage.size("big.bin").await.unwrap(), None);
    assert!(server.pending_uploads().is_empty());
}
