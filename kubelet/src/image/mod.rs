//! Pulling and storing OCI images. See the image module docs once built.
