//! A fleet of simulated devices: the pure generator.
//!
//! # What must hold
//! * Deterministic: the same [`FleetConfig`] and the same sequence of `now` instants give the
//!   same messages, byte for byte (one seeded generator, no clock, no hash order).
//! * Devices take turns (round-robin), so with `N` devices at `R` messages/s each device sends
//!   every `N / R` seconds; which signal a device sends is drawn with its shape's weights.
//! * Device `k` (from 1) is `<prefix>-<k, 4 digits>` and always speaks for patient
//!   `<prefix>-patient-<k, 4 digits>`.
//! * A message is bad with probability `bad_message_rate`, its defect drawn uniformly from
//!   [`BadKind::ALL`]; the device's state moves on as for a good one.

use chrono::{DateTime, Utc};

use crate::error::{ConfigError, ConfigProblem};
use crate::message::{self, BadKind, Identity, SimMessage};
use crate::physiology::Patient;
use crate::shape::{Shape, Signal};

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetConfig {
    /// How many devices (each with its own patient); at least 1.
    pub devices: usize,
    /// The wire format.
    pub shape: Shape,
    /// The seed: the same seed gives the same traffic.
    pub seed: u64,
    /// The fraction of messages that are bad on purpose, `0.0..=1.0`.
    pub bad_message_rate: f64,
    /// The start of every device id: letters, digits, `-`, `_`, `.`, `:`.
    pub device_prefix: String,
}

impl Default for FleetConfig {
    /// Ten wearables, seed 1, no bad messages, prefix `sim`.
    fn default() -> FleetConfig {
        FleetConfig {
            devices: 10,
            shape: Shape::Wearable,
            seed: 1,
            bad_message_rate: 0.0,
            device_prefix: "sim".to_owned(),
        }
    }
}

impl FleetConfig {
    /// Every problem of this configuration; empty when it can run.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if self.devices == 0 {
            problems.push(ConfigProblem::NoDevices);
        }
        if !(0.0..=1.0).contains(&self.bad_message_rate) {
            problems.push(ConfigProblem::BadMessageRate {
                rate: self.bad_message_rate,
            });
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
        if self.device_prefix.is_empty() || !self.device_prefix.chars().all(allowed) {
            problems.push(ConfigProblem::DevicePrefix {
                prefix: self.device_prefix.clone(),
            });
        }
        problems
    }
}

struct Device {
    identity: Identity,
    patient: Patient,
}

/// Simulated devices and their patients.
pub struct Fleet {
    shape: Shape,
    bad_message_rate: f64,
    devices: Vec<Device>,
    next_device: usize,
    signal_weight_total: u32,
    rng: fastrand::Rng,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("shape", &self.shape)
            .field("devices", &self.devices.len())
            .field("bad_message_rate", &self.bad_message_rate)
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// A fleet for `config`.
    ///
    /// # Errors
    /// [`ConfigError`] with every problem of `config` ([`FleetConfig::problems`]).
    pub fn new(config: FleetConfig) -> Result<Fleet, ConfigError> {
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        let mut rng = fastrand::Rng::with_seed(config.seed);
        let devices = (1..=config.devices)
            .map(|k| Device {
                identity: Identity {
                    device_id: format!("{}-{k:04}", config.device_prefix),
                    patient_id: format!("{}-patient-{k:04}", config.device_prefix),
                },
                patient: Patient::new(&mut rng),
            })
            .collect();
        Ok(Fleet {
            shape: config.shape,
            bad_message_rate: config.bad_message_rate,
            devices,
            next_device: 0,
            signal_weight_total: config.shape.signal_weights().iter().map(|(_, w)| w).sum(),
            rng,
        })
    }

    /// The shape of the messages.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// How many devices.
    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    /// The next device's next message, read at `now` (the device's clock; hub times in the
    /// message are a little later).
    pub fn next_message(&mut self, now: DateTime<Utc>) -> SimMessage {
        let index = self.next_device;
        self.next_device = (index + 1) % self.devices.len();
        let signal = self.pick_signal();
        let defect = (self.rng.f64() < self.bad_message_rate)
            .then(|| BadKind::ALL[self.rng.usize(0..BadKind::ALL.len())]);
        let device = &mut self.devices[index];
        let readings = device.patient.advance(now, &mut self.rng);
        message::build(
            self.shape,
            &device.identity,
            signal,
            &readings,
            now,
            defect,
            &mut self.rng,
        )
    }

    /// `msg` as one event envelope `{"Body", "Properties", "SystemProperties"}`, as
    /// `iomt normalize --envelope` reads it (see [`SimMessage::envelope_json`]).
    pub fn envelope_json(msg: &SimMessage) -> Vec<u8> {
        msg.envelope_json()
    }

    fn pick_signal(&mut self) -> Signal {
        let mut draw = self.rng.u32(0..self.signal_weight_total);
        for &(signal, weight) in self.shape.signal_weights() {
            if draw < weight {
                return signal;
            }
            draw -= weight;
        }
        unreachable!("the draw is below the sum of the weights")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_reported() {
        let config = FleetConfig {
            devices: 0,
            bad_message_rate: 1.5,
            device_prefix: "bad prefix".into(),
            ..FleetConfig::default()
        };
        let err = Fleet::new(config).unwrap_err();
        assert_eq!(
            err.problems,
            [
                ConfigProblem::NoDevices,
                ConfigProblem::BadMessageRate { rate: 1.5 },
                ConfigProblem::DevicePrefix {
                    prefix: "bad prefix".into()
                },
            ]
        );
        assert!(
            err.to_string()
                .starts_with("invalid simulator configuration: devices is 0"),
            "{err}"
        );
        let nan = FleetConfig {
            bad_message_rate: f64::NAN,
            ..FleetConfig::default()
        };
        assert_eq!(nan.problems().len(), 1);
    }

    #[test]
    fn devices_take_turns_with_stable_ids() {
        let mut fleet = Fleet::new(FleetConfig {
            devices: 3,
            device_prefix: "ward-7".into(),
            ..FleetConfig::default()
        })
        .unwrap();
        let now = DateTime::from_timestamp(1_795_680_000, 0).unwrap();
        let ids: Vec<String> = (0..7).map(|_| fleet.next_message(now).device_id).collect();
        assert_eq!(
            ids,
            [
                "ward-7-0001",
                "ward-7-0002",
                "ward-7-0003",
                "ward-7-0001",
                "ward-7-0002",
                "ward-7-0003",
                "ward-7-0001"
            ]
        );
    }

    #[test]
    fn signals_follow_the_shape_weights() {
        let mut fleet = Fleet::new(FleetConfig {
            shape: Shape::IotHub,
            ..FleetConfig::default()
        })
        .unwrap();
        let now = DateTime::from_timestamp(1_795_680_000, 0).unwrap();
        let n = 20_000;
        let bp = (0..n)
            .filter(|_| {
                fleet.next_message(now).kind == message::MessageKind::Good(Signal::BloodPressure)
            })
            .count();
        let share = bp as f64 / n as f64;
        assert!(
            (0.23..0.27).contains(&share),
            "blood pressure share {share}"
        );
    }
}
