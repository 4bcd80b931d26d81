//! Any bytes as a frame body: decoded as either side's message and opened as a sealed
//! frame. Nothing may panic, and nothing random may open.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wisp_common::proto::frame::decode;
use wisp_common::proto::session::{SessionKeys, Side};
use wisp_common::proto::{GenieMsg, Nonce, RouterMsg};
use wisp_common::secret::Secret;
use wisp_common::HostId;

fuzz_target!(|data: &[u8]| {
    let _ = decode::<GenieMsg>(data);
    let _ = decode::<RouterMsg>(data);
    let s = Secret::from_bytes(b"fuzz-secret-0123456789".to_vec());
    let h = HostId::new("h1").expect("valid host");
    let n = Nonce::from_bytes([1; 32]);
    let mut keys = SessionKeys::derive(&s, Side::Router, &h, &n, &n);
    assert!(keys.open.open::<GenieMsg>(data).is_err());
});
