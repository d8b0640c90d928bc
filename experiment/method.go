package experiment

import (
	"fmt"

	"github.com/sbtrain/sbtrain/config"
	"github.com/sbtrain/sbtrain/method"
)

// Method builds the config's training method, the one the single-process
// run and the distributed job both drive.
func (s *Setup) Method() (method.Method, error) {
	switch s.Config.Method {
	case config.MethodDSB:
		o, err := s.DSBOptions()
		if err != nil {
			return nil, err
		}
		return method.NewDSB(o)
	case config.MethodSI:
		o, err := s.SIOptions()
		if err != nil {
			return nil, err
		}
		return method.NewSI(o, s.samplerOptions())
	case config.MethodDSBM:
		o, err := s.DSBMOptions()
		if err != nil {
			return nil, err
		}
		return method.NewDSBM(o)
	default:
		return nil, fmt.Errorf("method %q: want dsb, si or dsbm", s.Config.Method)
	}
}
