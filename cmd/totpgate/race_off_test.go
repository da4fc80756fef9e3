//go:build !race

package main

// memoryFactor scales peak-RSS bounds; 1 without the race detector.
const memoryFactor = 1
