package main

import "flag"

// metricsFlags is --metrics-addr of once and run.
type metricsFlags struct {
	metricsAddr string
}

func (f *metricsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.metricsAddr, "metrics-addr", "", "listen address of the /metrics, /healthz and /readyz server, e.g. :9464 (empty: none)")
}
