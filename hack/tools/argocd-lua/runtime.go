// The health-script runtime of Argo CD v3.5.1 (github.com/argoproj/argo-cd, commit
// 109ca7ca71139e514114499d294a492e7910a965), mirrored from util/lua/lua.go: runLuaWithResourceActionParameters,
// ExecuteHealthLua, decodeValue and isValidHealthStatusCode, on the gopher-lua and gopher-json versions that
// release pins in its go.mod (github.com/yuin/gopher-lua v1.1.2, layeh.com/gopher-json 97fed8db8427).
// Argo CD's own package is not imported: as a dependency its module needs its ~40 replace directives
// (k8s.io/*, gitops-engine => ./gitops-engine) copied here, and most of Kubernetes compiled for four functions.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"time"

	lua "github.com/yuin/gopher-lua"
	luajson "layeh.com/gopher-json"
)

// HealthStatus is gitops-engine's pkg/health.HealthStatus (the same JSON names and omitempty).
type HealthStatus struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
}

const invalidHealthStatus = "Lua returned an invalid health status"

// validStatuses: gitops-engine's HealthStatusCode values (isValidHealthStatusCode).
var validStatuses = map[string]bool{
	"Unknown": true, "Progressing": true, "Suspended": true, "Healthy": true, "Degraded": true, "Missing": true,
}

// runLua opens what Argo CD opens: with useOpenLibs false (an argocd-cm customization without
// resource.customizations.useOpenLibs.<group_kind>: "true") only package, base, table and the safe os (time,
// date); no string, math, io or coroutine. Argo CD's own TestLuaHealthScript and its built-in scripts use true.
func runLua(obj map[string]any, script string, useOpenLibs bool) (*lua.LState, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: !useOpenLibs})
	for _, pair := range []struct {
		n string
		f lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.OsLibName, OpenSafeOs},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(pair.f), NRet: 0, Protect: true},
			lua.LString(pair.n)); err != nil {
			panic(err)
		}
	}
	l.PreloadModule(lua.OsLibName, SafeOsLoader)
	ctx, cancel := context.WithTimeout(context.Background(), 1*time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("actionParams", l.CreateTable(0, 0))
	l.SetGlobal("obj", decodeValue(l, obj))
	err := l.DoString(script)
	var apiErr *lua.ApiError
	if errors.As(err, &apiErr) && apiErr.Type == lua.ApiErrorRun {
		apiErr.StackTrace = "" // as Argo CD: the message reaches the user without Lua's stack trace
		err = apiErr
	}
	return l, err
}

// executeHealthLua is Argo CD's ExecuteHealthLua: the script's returned table, JSON-encoded by gopher-json and
// decoded into a HealthStatus; an unknown status becomes Unknown with Argo CD's message.
func executeHealthLua(obj map[string]any, script string, useOpenLibs bool) (*HealthStatus, error) {
	l, err := runLua(obj, script, useOpenLibs)
	defer l.Close()
	if err != nil {
		return nil, err
	}
	returnValue := l.Get(-1)
	switch returnValue.Type() {
	case lua.LTTable:
		jsonBytes, err := luajson.Encode(returnValue)
		if err != nil {
			return nil, err
		}
		status := &HealthStatus{}
		if err := json.Unmarshal(jsonBytes, status); err != nil {
			typeError := &json.UnmarshalTypeError{Value: "array", Type: reflect.TypeOf(status)}
			if errors.As(err, &typeError) {
				return &HealthStatus{}, nil // an empty table encodes as [] (Argo CD's same special case)
			}
			return nil, err
		}
		if !validStatuses[status.Status] {
			return &HealthStatus{Status: "Unknown", Message: invalidHealthStatus}, nil
		}
		return status, nil
	case lua.LTNil:
		return &HealthStatus{}, nil
	}
	return nil, fmt.Errorf("expect table output from Lua script, not %s", returnValue.Type().String())
}

// decodeValue is Argo CD's: JSON values to Lua values (numbers as LNumber, objects and arrays as tables).
func decodeValue(l *lua.LState, value any) lua.LValue {
	switch converted := value.(type) {
	case bool:
		return lua.LBool(converted)
	case float64:
		return lua.LNumber(converted)
	case string:
		return lua.LString(converted)
	case json.Number:
		return lua.LString(converted)
	case int:
		return lua.LNumber(converted)
	case int32:
		return lua.LNumber(converted)
	case int64:
		return lua.LNumber(converted)
	case []any:
		arr := l.CreateTable(len(converted), 0)
		for _, item := range converted {
			arr.Append(decodeValue(l, item))
		}
		return arr
	case map[string]any:
		tbl := l.CreateTable(0, len(converted))
		for key, item := range converted {
			tbl.RawSetH(lua.LString(key), decodeValue(l, item))
		}
		return tbl
	}
	return lua.LNil
}
