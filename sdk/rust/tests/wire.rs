//! What the SDK puts on the wire, read frame by frame by a bare HTTP/2 peer: a unary call's
//! request ends on its one DATA frame (END_STREAM set there), not on an empty DATA frame after
//! it, so it goes out in fewer writes and the proxy sees the end together with the message.

use std::time::Duration;

use exo_sdk::{QueueClient, RetryPolicy};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const END_STREAM: u8 = 0x1;

/// One frame's header: (type, flags, stream id), and its payload.
async fn read_frame(socket: &mut tokio::net::TcpStream) -> (u8, u8, u32, Vec<u8>) {
    let mut head = [0u8; 9];
    socket.read_exact(&mut head).await.expect("a frame header");
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    socket.read_exact(&mut payload).await.expect("a frame payload");
    (head[3], head[4], stream, payload)
}

#[tokio::test]
async fn a_unary_request_ends_on_its_data_frame() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let peer = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut preface = [0u8; 24];
        socket.read_exact(&mut preface).await.unwrap();
        assert_eq!(preface, PREFACE);
        // Our (empty) SETTINGS, and the ACK of the client's.
        socket.write_all(&[0, 0, 0, SETTINGS, 0, 0, 0, 0, 0]).await.unwrap();
        socket.write_all(&[0, 0, 0, SETTINGS, 1, 0, 0, 0, 0]).await.unwrap();
        // The frames of the first request, up to the one that ends it.
        let mut frames = Vec::new();
        loop {
            let (kind, flags, stream, payload) = read_frame(&mut socket).await;
            if stream == 0 || !(kind == HEADERS || kind == DATA) {
                continue; // connection frames: SETTINGS, WINDOW_UPDATE, PING
            }
            frames.push((kind, flags, payload.len()));
            if flags & END_STREAM != 0 {
                return frames;
            }
        }
    });
    let client = QueueClient::connect(&url).unwrap().with_retry(RetryPolicy::none());
    // Nothing answers it; the frames are all this test wants.
    let _ =
        tokio::time::timeout(Duration::from_millis(500), client.send("wire-check", vec![7u8; 1024])).await;
    let frames = tokio::time::timeout(Duration::from_secs(5), peer).await.expect("frames in time").unwrap();
    let data: Vec<_> = frames.iter().filter(|(kind, ..)| *kind == DATA).collect();
    assert_eq!(data.len(), 1, "one DATA frame, not one plus an empty end: {frames:?}");
    let (_, flags, len) = data[0];
    assert!(flags & END_STREAM != 0 && *len > 1024, "the message's frame ends the stream: {frames:?}");
}
