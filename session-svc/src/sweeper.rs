//! The sweeper (placeholder; filled in below).

/// Store namespace archived sessions move to.
pub const ARCHIVE_NAMESPACE: &str = "archive";
/// Store namespace of the sweeper's cursors, so a pass resumes after a restart.
pub const SWEEPER_NAMESPACE: &str = "sweeper";
