//! MQTT framing and packets (3.1.1 and 5).
