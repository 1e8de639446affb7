use super::*;
use tokio::io::{AsyncReadExt as _, duplex};

#[tokio::test(start_paused = true)]
async fn a_connection_with_no_request_reads_as_closed_after_the_timeout() {
    let (_client, server) = duplex(64);
    let mut io = IdleClose::new(server, Duration::from_millis(300));
    let began = Instant::now();
    let mut buf = [0u8; 8];
    assert_eq!(io.read(&mut buf).await.unwrap(), 0);
    assert_eq!(began.elapsed(), Duration::from_millis(300));
}

#[tokio::test(start_paused = true)]
async fn an_open_request_holds_the_connection_and_its_end_restarts_the_clock() {
    let (_client, server) = duplex(64);
    let mut io = IdleClose::new(server, Duration::from_millis(300));
    let open = RequestOpen::new(io.activity());
    let began = Instant::now();
    let release = async {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        drop(open);
    };
    let mut buf = [0u8; 8];
    let (read, ()) = tokio::join!(io.read(&mut buf), release);
    assert_eq!(read.unwrap(), 0);
    assert_eq!(began.elapsed(), Duration::from_millis(1300));
}
