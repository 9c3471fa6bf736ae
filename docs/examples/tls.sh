export METROBUS_BROKER='kafka://b1.example.com:9093;kafka://b2.example.com:9093;kafka://b3.example.com:9093'
export METROBUS_SECURITY_PROTOCOL=SASL_SSL          # TLS to the brokers, SASL to log in
export METROBUS_SASL_MECHANISM=SCRAM-SHA-512        # or SCRAM-SHA-256, or PLAIN (only over TLS!)
export METROBUS_SASL_USERNAME=metrobus
export METROBUS_SASL_PASSWORD="$(cat /run/secrets/kafka-password)"
export METROBUS_SSL_CAFILE=/etc/metrobus/kafka-ca.pem   # leave empty to trust the system's CAs
faust -A metrobus_app settings    # shows METROBUS_SASL_PASSWORD=***
faust -A metrobus_app worker -l info
