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
