//! Where desired states come from: the YAML file (`config`) and the
//! Kubernetes API (`k8s`).
pub mod config;
pub mod k8s;
