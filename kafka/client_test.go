package kafka_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/kafka"
)

// TestNewClientSASL: the mechanism's name is case-insensitive, as Kafka's own clients take it;
// an unknown one and credentials SASLprep refuses are errors that never show the password and
// name no command-line flag (the caller knows which of its settings it was).
func TestNewClientSASL(t *testing.T) {
	const secret = "pa\u0007ss-s3cr3t" // a control character: SASLprep refuses it
	cases := []struct {
		mechanism, password string
		err                 string // "" : accepted
	}{
		{"", "", ""},
		{"plain", "p", ""},
		{"PLAIN", "p", ""},
		{"scram-sha-256", "p", ""},
		{"SCRAM-SHA-512", "p", ""},
		{"Scram-Sha-512", "p", ""},
		{"gssapi", "p", `SASL mechanism "gssapi": want plain, scram-sha-256 or scram-sha-512`},
		{"SCRAM-SHA-256", secret, "SASL SCRAM-SHA-256: invalid user name or password (SASLprep)"},
	}
	for _, c := range cases {
		t.Run(c.mechanism, func(t *testing.T) {
			cl, err := kafka.NewClient(kafka.Config{Brokers: []string{"127.0.0.1:1"}, SASL: kafka.SASL{Mechanism: c.mechanism, Username: "u", Password: c.password}})
			if c.err == "" {
				require.NoError(t, err)
				cl.Close()
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.err)
			assert.NotContains(t, err.Error(), "s3cr3t")
			assert.NotContains(t, err.Error(), "--")
		})
	}
	_, err := kafka.NewClient(kafka.Config{})
	assert.ErrorContains(t, err, "no broker address")
}
