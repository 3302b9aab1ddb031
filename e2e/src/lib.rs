//! Emulated Kubernetes control plane and end-to-end tests (arriving with issues 3 and 4).
