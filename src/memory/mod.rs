pub mod futex;
pub mod region;
pub mod uring;
