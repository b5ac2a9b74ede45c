//! STUB: read-only iteration over the records of Kafka record batches.
