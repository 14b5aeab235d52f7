pub mod futex;
pub mod prefetch;
pub mod region;
pub mod uring;
