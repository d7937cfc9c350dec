//! mqttx-codec: the MQTT wire codec (work in progress).
#![no_std]
