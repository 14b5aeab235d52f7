//! Safe wrapper over rdma-sys (filled in by the verbs-layer work).
