package experiment

import "github.com/sbtrain/sbtrain/method"

// The sampling models live with the methods that make them; these names
// keep the experiment API.
type (
	Model     = method.Model
	Generated = method.Generated
	RoleNet   = method.RoleNet
	DSBModel  = method.DSBModel
	SIModel   = method.SIModel
	DSBMModel = method.DSBMModel
)
