"""The Kafka runtime under Faust: intake, producing, delivery, the transport, plain clients, broker health."""
