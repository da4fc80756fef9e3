//go:build race

package main

// memoryFactor scales peak-RSS bounds: the race detector's shadow memory
// multiplies what every touched byte costs, and the child sidecar is this
// race-built test binary.
const memoryFactor = 5
