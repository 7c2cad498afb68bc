//! What the service benchmarks share: their command-line options and the simulated fleet.

use iomt_simulate::{Fleet, FleetConfig, Shape};

/// The number after `name` on the command line (`-- --messages 1000`), or `default`.
pub fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `devices` simulated wearables (`bench-…`), no bad messages.
pub fn fleet(devices: usize, seed: u64) -> Fleet {
    Fleet::new(FleetConfig {
        devices,
        shape: Shape::Wearable,
        seed,
        bad_message_rate: 0.0,
        device_prefix: "bench".into(),
    })
    .unwrap()
}
