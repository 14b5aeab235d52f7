pub mod region;
pub mod uring;
