//! Sources: where device messages enter. Each source turns what it receives into
//! [`crate::event::DeviceEvent`]s, appends them to the durable log, and acknowledges only
//! once the log says they are durable.

pub mod http;
pub mod mqtt;
