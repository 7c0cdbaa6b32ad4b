// Command example loads a model, prefills, decodes, classifies channels
// after calibrating on a few random windows, and runs a LongMamba prefill.
//
//	go run ./example MODEL_DIR
package main

import (
	"fmt"
	"math/rand"
	"os"

	"longmamba"
)

func argmax(v []float32) int32 {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return int32(best)
}

func run(dir string) error {
	m, err := longmamba.LoadModel(dir, &longmamba.ModelOptions{Backend: longmamba.BackendCPU})
	if err != nil {
		return err
	}
	defer m.Close()
	V := m.VocabSize()
	fmt.Printf("Mamba-%d, %d layers, d_model %d, vocab %d\n", m.Info().Arch, m.Info().NLayer, m.Info().DModel, V)
	r := rand.New(rand.NewSource(42))
	tokens := func(n int) []int32 {
		t := make([]int32, n)
		for i := range t {
			t[i] = int32(r.Intn(V))
		}
		return t
	}

	s, err := m.NewSession(nil)
	if err != nil {
		return err
	}
	defer s.Close()
	logits, err := s.Prefill(tokens(16), 1)
	if err != nil {
		return err
	}
	var generated []int32
	for i := 0; i < 8; i++ {
		next := argmax(logits)
		generated = append(generated, next)
		if logits, err = s.Decode(next); err != nil {
			return err
		}
	}
	fmt.Println("greedy continuation:", generated)

	windows := [][]int32{tokens(64), tokens(64), tokens(64), tokens(64)}
	calib, err := m.Calibrate(windows, nil)
	if err != nil {
		return err
	}
	defer calib.Close()
	_, counts, err := calib.ClassifyChannels(1e-3)
	if err != nil {
		return err
	}
	fmt.Println("global channels per layer:", counts, "of", calib.Info().NChannels)
	if err := s.Reset(); err != nil {
		return err
	}
	if err := s.SetLongMamba(calib, nil); err != nil {
		return err
	}
	long := tokens(256)
	if logits, err = s.Prefill(long, 1); err != nil {
		return err
	}
	fmt.Printf("longmamba prefill of %d tokens: next token %d\n", len(long), argmax(logits))
	return nil
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: example MODEL_DIR")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
