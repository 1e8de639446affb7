//! The usage ledger (being written).
