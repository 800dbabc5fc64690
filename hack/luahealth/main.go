// Command luahealth runs an Argo CD resource health script the way Argo CD does: in gopher-lua
// (the interpreter Argo CD embeds), with the base, table, string and math libraries only, the
// resource as the global `obj` (its JSON decoded into Lua tables: objects keyed by name, arrays
// 1-indexed), and prints the table the script returns as JSON: {"status": ..., "message": ...}.
//
// Usage: luahealth SCRIPT.lua < object.json
// Exit status: 0 on a result, 1 when the script fails or returns no table, 2 on bad usage.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	lua "github.com/yuin/gopher-lua"
)

func toLua(L *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []any:
		table := L.NewTable()
		for _, item := range v {
			table.Append(toLua(L, item))
		}
		return table
	case map[string]any:
		table := L.NewTable()
		for key, item := range v {
			table.RawSetString(key, toLua(L, item))
		}
		return table
	default:
		panic(fmt.Sprintf("unexpected JSON value %T", value))
	}
}

func fail(code int, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "luahealth: "+format+"\n", args...)
	os.Exit(code)
}

func main() {
	if len(os.Args) != 2 {
		fail(2, "usage: luahealth SCRIPT.lua < object.json")
	}
	script, err := os.ReadFile(os.Args[1])
	if err != nil {
		fail(2, "%v", err)
	}
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(2, "reading the object: %v", err)
	}
	var obj map[string]any
	if err := json.Unmarshal(raw, &obj); err != nil {
		fail(2, "the object is not a JSON object: %v", err)
	}

	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.StringLibName, lua.OpenString},
		{lua.MathLibName, lua.OpenMath},
	} {
		L.Push(L.NewFunction(lib.open))
		L.Push(lua.LString(lib.name))
		L.Call(1, 0)
	}
	L.SetGlobal("obj", toLua(L, obj))
	if err := L.DoString(string(script)); err != nil {
		fail(1, "the script failed: %v", err)
	}
	result, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		fail(1, "the script returned %s, not a table", L.Get(-1).Type())
	}
	out := map[string]string{}
	for _, key := range []string{"status", "message"} {
		value := result.RawGetString(key)
		if value != lua.LNil {
			out[key] = value.String()
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fail(1, "%v", err)
	}
}
