//! What a reconcile needs from the host (the port), with a real and a simulated adapter.
