//! MQTT topic names and topic filters.
