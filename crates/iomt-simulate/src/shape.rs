//! Message shapes and the signals each one carries.
//!
//! A shape is the wire format of one of the example mappings in `examples/`: the simulator
//! writes exactly the fields that mapping reads, so every good message normalizes and maps
//! with it. The signals a shape carries are the measurement types its device mapping has a
//! template for (nothing maps glucose yet, so no shape sends it).

use std::fmt;
use std::str::FromStr;

use crate::error::ParseShapeError;

/// The wire format of the simulated messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Shape {
    /// A plain JSON body per reading, as `examples/wearable/devicecontent.json` reads it:
    /// `deviceId`, `patientId`, an ISO 8601 `endDate` and one value field (body temperature
    /// carries `epochMs` and `temperatureF` instead). Heart rate, SpO2, blood pressure, steps,
    /// body temperature.
    #[default]
    Wearable,
    /// Azure IoT Hub events, as `examples/iothub/devicecontent.json` reads them: a body with
    /// `patientId` and the value fields, the device time in the property
    /// `iothub-creation-time-utc`, the device id and enqueued time in the system properties
    /// `iothub-connection-device-id` and `iothub-enqueuedtime`. Heart rate, blood pressure.
    IotHub,
    /// Azure IoT Central data export messages, as `examples/iotcentral/devicecontent.json`
    /// reads them: `deviceId`, `enqueuedTime`, `telemetry.HeartRate` and
    /// `enrichments.patientId`. Heart rate.
    IotCentral,
}

impl Shape {
    /// Every shape, in declaration order.
    pub const ALL: [Shape; 3] = [Shape::Wearable, Shape::IotHub, Shape::IotCentral];

    /// The kebab-case name (`wearable`, `iot-hub`, `iot-central`).
    pub fn name(self) -> &'static str {
        match self {
            Shape::Wearable => "wearable",
            Shape::IotHub => "iot-hub",
            Shape::IotCentral => "iot-central",
        }
    }

    /// The folder under `examples/` whose mappings read this shape.
    pub fn example_dir(self) -> &'static str {
        match self {
            Shape::Wearable => "wearable",
            Shape::IotHub => "iothub",
            Shape::IotCentral => "iotcentral",
        }
    }

    /// The signals this shape carries, each with its relative weight in the traffic.
    pub(crate) fn signal_weights(self) -> &'static [(Signal, u32)] {
        match self {
            Shape::Wearable => &[
                (Signal::HeartRate, 40),
                (Signal::Spo2, 20),
                (Signal::BloodPressure, 10),
                (Signal::Steps, 15),
                (Signal::BodyTemperature, 15),
            ],
            Shape::IotHub => &[(Signal::HeartRate, 75), (Signal::BloodPressure, 25)],
            Shape::IotCentral => &[(Signal::HeartRate, 1)],
        }
    }

    /// The signals this shape carries.
    pub fn signals(self) -> impl Iterator<Item = Signal> {
        self.signal_weights().iter().map(|(signal, _)| *signal)
    }

    /// Whether a sent message needs its event envelope (`{Body, Properties, SystemProperties}`)
    /// to normalize, because the mapping reads properties: NDJSON written for this shape is in
    /// envelope form (`iomt normalize --envelope`).
    pub fn needs_envelope(self) -> bool {
        matches!(self, Shape::IotHub)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Shape {
    type Err = ParseShapeError;

    /// The kebab-case name, or the example folder's name (`iothub`, `iotcentral`).
    fn from_str(s: &str) -> Result<Shape, ParseShapeError> {
        Shape::ALL
            .into_iter()
            .find(|shape| shape.name() == s || shape.example_dir() == s)
            .ok_or_else(|| ParseShapeError {
                given: s.to_owned(),
            })
    }
}

/// One kind of reading: a measurement type of the example device mappings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// Heart rate, beats per minute (integer).
    HeartRate,
    /// Oxygen saturation, percent (integer 94–100).
    Spo2,
    /// Systolic and diastolic blood pressure, mmHg (integers).
    BloodPressure,
    /// Steps counted since the start of the day (UTC).
    Steps,
    /// Body temperature (sent in °F, mapped to °C).
    BodyTemperature,
}

impl Signal {
    /// The `typeName` the example mappings give this signal's measurements.
    pub fn type_name(self) -> &'static str {
        match self {
            Signal::HeartRate => "heartrate",
            Signal::Spo2 => "spo2",
            Signal::BloodPressure => "bloodpressure",
            Signal::Steps => "steps",
            Signal::BodyTemperature => "bodytemperature",
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.type_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_example_folders_parse() {
        for shape in Shape::ALL {
            assert_eq!(shape.to_string().parse::<Shape>(), Ok(shape));
            assert_eq!(shape.example_dir().parse::<Shape>(), Ok(shape));
        }
        assert_eq!("iot-hub".parse::<Shape>(), Ok(Shape::IotHub));
        let err = "mqtt".parse::<Shape>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown shape 'mqtt': use wearable, iot-hub or iot-central"
        );
    }
}
