//! Grouping: which measurements become one Observation (SPEC §6).
//!
//! Two layers, both pure:
//! * [`batch`] — the original's rules over one closed batch: group by key, de-duplicate by
//!   occurrence time, split into observation windows.
//! * [`Windower`] — the same rules as a streaming state machine driven by event time and a
//!   caller-supplied watermark.
//!
//! Both produce [`ObservationGroup`]s; [`window`] defines the windows themselves
//! ([`PeriodInterval`], optional time zone).

pub mod batch;
mod key;
mod observation_group;
pub mod window;
mod windower;

pub use batch::{MeasurementGroup, group_batch};
pub use observation_group::{ObservationGroup, PropertyValues, TimeValue};
pub use window::{PeriodInterval, Window, WindowSpec};
pub use windower::{Rejected, WindowSpecSource, Windower};
