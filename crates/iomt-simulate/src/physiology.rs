//! One simulated patient's physiology: a small state that moves with time.
//!
//! Every signal is a mean-reverting random walk (an Ornstein–Uhlenbeck process, stepped
//! exactly for any time gap) around a per-patient baseline, so values drift like real vitals
//! instead of jumping between independent draws, and the result does not depend on how often
//! the patient is sampled. Activity bursts (a few minutes, about once an hour) raise the heart
//! rate, blood pressure, temperature and step cadence together and lower SpO2 a little.
//!
//! # What must hold
//! * Time is passed in; nothing here reads a clock. A gap is clamped to `0..=1 h`, so time
//!   running backwards freezes the state and a long silence does not create a burst of steps.
//! * Every reading is within the bounds below, whatever the random draws
//!   ([`HEART_RATE`], [`SPO2`], [`SYSTOLIC`], [`DIASTOLIC`], [`PULSE_PRESSURE_MIN`],
//!   [`TEMPERATURE_C`]); steps only count up within a UTC day and start from 0 on the next.

use std::ops::RangeInclusive;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};

/// Heart rate bounds, beats per minute.
pub const HEART_RATE: RangeInclusive<u16> = 40..=180;
/// The range a patient's resting heart rate is drawn from, beats per minute.
pub const RESTING_HEART_RATE: RangeInclusive<u16> = 50..=100;
/// SpO2 bounds, percent.
pub const SPO2: RangeInclusive<u8> = 94..=100;
/// Systolic blood pressure bounds, mmHg.
pub const SYSTOLIC: RangeInclusive<u16> = 90..=180;
/// Diastolic blood pressure bounds, mmHg.
pub const DIASTOLIC: RangeInclusive<u16> = 50..=110;
/// The smallest systolic − diastolic difference, mmHg.
pub const PULSE_PRESSURE_MIN: u16 = 20;
/// Body temperature bounds, °C.
pub const TEMPERATURE_C: RangeInclusive<f64> = 36.1..=37.8;

/// The longest gap one step covers.
const MAX_GAP_SECONDS: f64 = 3600.0;
/// Mean time between activity bursts.
const MEAN_REST_SECONDS: f64 = 3600.0;

/// A snapshot of a patient's readings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Readings {
    pub heart_rate: u16,
    pub spo2: u8,
    pub systolic: u16,
    pub diastolic: u16,
    /// Steps since the start of `steps_day`.
    pub steps: u32,
    /// The UTC day `steps` counts.
    pub steps_day: NaiveDate,
    pub temperature_c: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Activity {
    Resting,
    Active {
        until: DateTime<Utc>,
        /// Heart rate above resting, beats per minute.
        boost: f64,
        /// Steps per minute.
        cadence: f64,
    },
}

/// One patient's state.
#[derive(Debug, Clone)]
pub(crate) struct Patient {
    resting_hr: f64,
    hr: f64,
    spo2_base: f64,
    spo2: f64,
    systolic_base: f64,
    diastolic_base: f64,
    /// Shared, slowly varying blood-pressure factor (unit variance): moves systolic and
    /// diastolic together.
    bp_factor: f64,
    temperature_base: f64,
    temperature: f64,
    steps_day: Option<NaiveDate>,
    steps: f64,
    activity: Activity,
    last: Option<DateTime<Utc>>,
}

impl Patient {
    /// A patient with baselines drawn from `rng`.
    pub fn new(rng: &mut fastrand::Rng) -> Patient {
        let resting_hr = uniform(
            rng,
            f64::from(*RESTING_HEART_RATE.start()),
            f64::from(*RESTING_HEART_RATE.end()),
        );
        let spo2_base = uniform(rng, 96.0, 99.0);
        let systolic_base = uniform(rng, 105.0, 140.0);
        let diastolic_base = systolic_base * 0.62 + uniform(rng, -5.0, 5.0);
        let temperature_base = uniform(rng, 36.5, 37.1);
        Patient {
            resting_hr,
            hr: resting_hr,
            spo2_base,
            spo2: spo2_base,
            systolic_base,
            diastolic_base,
            bp_factor: 0.0,
            temperature_base,
            temperature: temperature_base,
            steps_day: None,
            steps: 0.0,
            activity: Activity::Resting,
            last: None,
        }
    }

    /// Moves the state to `now` and reads every signal.
    pub fn advance(&mut self, now: DateTime<Utc>, rng: &mut fastrand::Rng) -> Readings {
        let dt = self.last.map_or(0.0, |last| {
            ((now - last).num_milliseconds() as f64 / 1000.0).clamp(0.0, MAX_GAP_SECONDS)
        });
        if self.last.is_none_or(|last| now > last) {
            self.last = Some(now);
        }

        if let Activity::Active { until, .. } = self.activity
            && now >= until
        {
            self.activity = Activity::Resting;
        }
        if self.activity == Activity::Resting && rng.f64() < 1.0 - (-dt / MEAN_REST_SECONDS).exp() {
            let minutes = uniform(rng, 2.0, 10.0);
            self.activity = Activity::Active {
                until: now + TimeDelta::milliseconds((minutes * 60_000.0) as i64),
                boost: uniform(rng, 25.0, 70.0),
                cadence: uniform(rng, 60.0, 120.0),
            };
        }
        let (boost, cadence) = match self.activity {
            Activity::Resting => (0.0, uniform(rng, 0.0, 5.0)),
            Activity::Active { boost, cadence, .. } => (boost, cadence),
        };
        let effort = boost / 70.0;

        self.hr = ou(rng, self.hr, self.resting_hr + boost, dt, 20.0, 3.0);
        self.spo2 = ou(rng, self.spo2, self.spo2_base - effort, dt, 60.0, 0.7);
        self.bp_factor = ou(rng, self.bp_factor, 0.0, dt, 300.0, 1.0);
        self.temperature = ou(
            rng,
            self.temperature,
            self.temperature_base + 0.3 * effort,
            dt,
            1800.0,
            0.12,
        );

        let day = now.date_naive();
        if self.steps_day != Some(day) {
            self.steps_day = Some(day);
            self.steps = 0.0;
        } else {
            self.steps += cadence * dt / 60.0;
        }

        let systolic = self.systolic_base + 8.0 * self.bp_factor + 0.35 * boost + normal(rng) * 3.0;
        let diastolic =
            self.diastolic_base + 5.0 * self.bp_factor + 0.1 * boost + normal(rng) * 2.0;
        let systolic = clamp_round(systolic, &SYSTOLIC);
        let diastolic = clamp_round(diastolic, &DIASTOLIC).min(systolic - PULSE_PRESSURE_MIN);

        Readings {
            heart_rate: clamp_round(self.hr, &HEART_RATE),
            spo2: clamp_round(
                self.spo2,
                &(u16::from(*SPO2.start())..=u16::from(*SPO2.end())),
            ) as u8,
            systolic,
            diastolic,
            steps: self.steps as u32,
            steps_day: day,
            temperature_c: self
                .temperature
                .clamp(*TEMPERATURE_C.start(), *TEMPERATURE_C.end()),
        }
    }
}

/// One exact step of an Ornstein–Uhlenbeck process: `x` reverts to `mean` with time constant
/// `tau` seconds and has stationary standard deviation `sd`.
fn ou(rng: &mut fastrand::Rng, x: f64, mean: f64, dt: f64, tau: f64, sd: f64) -> f64 {
    let keep = (-dt / tau).exp();
    mean + (x - mean) * keep + sd * (1.0 - keep * keep).sqrt() * normal(rng)
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut fastrand::Rng) -> f64 {
    let u1 = 1.0 - rng.f64(); // (0, 1]: ln stays finite
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A uniform draw from `low..high`.
pub(crate) fn uniform(rng: &mut fastrand::Rng, low: f64, high: f64) -> f64 {
    low + (high - low) * rng.f64()
}

fn clamp_round(value: f64, bounds: &RangeInclusive<u16>) -> u16 {
    value
        .round()
        .clamp(f64::from(*bounds.start()), f64::from(*bounds.end())) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_795_680_000 + seconds, 0).unwrap()
    }

    #[test]
    fn heart_rate_stays_near_rest_without_activity_and_rises_in_a_burst() {
        let mut rng = fastrand::Rng::with_seed(3);
        let mut patient = Patient::new(&mut rng);
        let resting = patient.resting_hr;
        patient.advance(at(0), &mut rng);
        patient.activity = Activity::Active {
            until: at(600),
            boost: 60.0,
            cadence: 100.0,
        };
        let mut during = Vec::new();
        for s in 1..=500 {
            during.push(f64::from(patient.advance(at(s), &mut rng).heart_rate));
        }
        let late: f64 = during[200..].iter().sum::<f64>() / 300.0;
        assert!(
            (late - (resting + 60.0)).abs() < 8.0,
            "burst mean {late} vs resting {resting}"
        );
        let steps = patient.advance(at(501), &mut rng).steps;
        assert!(
            (700..=900).contains(&steps),
            "about 100 steps/min for 500 s, got {steps}"
        );
    }

    #[test]
    fn time_going_backwards_freezes_the_state() {
        let mut rng = fastrand::Rng::with_seed(9);
        let mut patient = Patient::new(&mut rng);
        patient.advance(at(100), &mut rng);
        let steps = patient.advance(at(200), &mut rng).steps;
        let again = patient.advance(at(50), &mut rng).steps;
        assert_eq!(steps, again, "a negative gap adds no steps");
        assert_eq!(patient.last, Some(at(200)));
    }

    #[test]
    fn steps_start_over_on_a_new_utc_day() {
        let mut rng = fastrand::Rng::with_seed(5);
        let mut patient = Patient::new(&mut rng);
        let midnight = at(0).date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc();
        patient.advance(midnight - TimeDelta::hours(2), &mut rng);
        let before = patient.advance(midnight - TimeDelta::seconds(1), &mut rng);
        assert!(before.steps > 0);
        let after = patient.advance(midnight, &mut rng);
        assert_eq!(after.steps, 0);
        assert_eq!(after.steps_day, midnight.date_naive());
    }

    #[test]
    fn normal_draws_have_unit_variance() {
        let mut rng = fastrand::Rng::with_seed(1);
        let n = 50_000;
        let draws: Vec<f64> = (0..n).map(|_| normal(&mut rng)).collect();
        let mean = draws.iter().sum::<f64>() / f64::from(n);
        let var = draws.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / f64::from(n);
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
    }
}
