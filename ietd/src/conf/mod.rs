//! Configuration input: ietd.conf, initiators.allow / initiators.deny / targets.allow,
//! parsed with file:line diagnostics into the typed model.

pub mod model;
pub mod params;
