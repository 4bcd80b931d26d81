//! Any byte stream from a would-be genie into the router's side of the handshake: it
//! must end (with an error) and never authenticate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokio::io::AsyncWriteExt;
use wisp_common::proto::handshake::accept;
use wisp_common::secret::Secret;

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (mut r, mut g) = tokio::io::duplex(64 << 10);
        let _ = g.write_all(data).await;
        drop(g);
        let secret = Secret::from_bytes(b"fuzz-secret-0123456789".to_vec());
        let peer = "127.0.0.1:1".parse().expect("addr");
        let r = accept(&mut r, peer, &secret, |_| true).await;
        assert!(r.is_err());
    });
});
