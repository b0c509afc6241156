//! TODO(specs helper)
