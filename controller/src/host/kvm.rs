//! KVM detection (filled in below).
