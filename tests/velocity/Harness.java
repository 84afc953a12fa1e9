// The differential harness: Apache Velocity 1.7 (Debian's package) with API Gateway's
// `$input`, `$util` and `$context` wired as the gateway has them: Jayway JsonPath over
// json-smart for `$input.path`/`$input.json`, commons-lang's StringEscapeUtils for
// `$util.escapeJavaScript`. Reads one JSON case per line on stdin ({"template", "body"}),
// writes one JSON line per case: {"out": ...} or {"error": ...}.
//
// Where API Gateway differs from stock Velocity 1.7, this encodes API Gateway's behaviour:
// a null reference renders as the empty string (a ReferenceInsertionEventHandler), objects
// from the body are Java maps (printed {k=v}) and lists print as compact JSON. One recorded
// difference it cannot encode, blanks between a reference and a #set (API Gateway keeps
// them, Velocity 1.7's lexer drops them), the test's generator leaves out.

import java.io.*;
import java.net.URLDecoder;
import java.net.URLEncoder;
import java.nio.charset.StandardCharsets;
import java.util.*;

import com.jayway.jsonpath.Configuration;
import com.jayway.jsonpath.JsonPath;
import com.jayway.jsonpath.PathNotFoundException;
import net.minidev.json.JSONArray;
import net.minidev.json.JSONObject;
import net.minidev.json.JSONStyle;
import net.minidev.json.JSONValue;
import org.apache.commons.lang.StringEscapeUtils;
import org.apache.velocity.VelocityContext;
import org.apache.velocity.app.VelocityEngine;
import org.apache.velocity.app.event.EventCartridge;
import org.apache.velocity.app.event.ReferenceInsertionEventHandler;

public class Harness {
    // Compact, and "/" not escaped (json-smart's flags turn protections off).
    static final JSONStyle COMPACT = new JSONStyle(JSONStyle.FLAG_PROTECT_4WEB);

    /** A JSON array printing as compact JSON without escaping "/" (API Gateway's print of a
     *  list from the body is recorded compact; its "/" escaping is not, and the gateway
     *  does not escape it). */
    public static class Array extends JSONArray {
        @Override public String toString() { return toJSONString(COMPACT); }
    }

    /** Objects as Java maps, arrays as JSON arrays, recursively. */
    static Object convert(Object v) {
        if (v instanceof Map) {
            Map<String, Object> m = new LinkedHashMap<>();
            for (Object e : ((Map<?, ?>) v).entrySet()) {
                Map.Entry<?, ?> en = (Map.Entry<?, ?>) e;
                m.put(String.valueOf(en.getKey()), convert(en.getValue()));
            }
            return m;
        }
        if (v instanceof List) {
            JSONArray a = new Array();
            for (Object o : (List<?>) v) a.add(convert(o));
            return a;
        }
        return v;
    }

    public static class Input {
        final String body;
        Object doc;
        boolean parsed;
        Input(String body) { this.body = body; }
        Object doc() {
            if (!parsed) {
                parsed = true;
                doc = body.isEmpty() ? new LinkedHashMap<String, Object>() : convert(JSONValue.parseKeepingOrder(body));
            }
            return doc;
        }
        public Object path(String p) {
            try {
                return JsonPath.read(doc(), p);
            } catch (PathNotFoundException e) {
                return null;
            }
        }
        public String json(String p) {
            Object v = path(p);
            if (v == null) return "\"\"";
            return JSONValue.toJSONString(v, COMPACT);
        }
        public String getBody() { return body.isEmpty() ? "{}" : body; }
        public Map<String, Object> params() {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("path", new LinkedHashMap<>());
            m.put("querystring", new LinkedHashMap<>());
            m.put("header", new LinkedHashMap<>());
            return m;
        }
        public String params(String name) { return ""; }
    }

    public static class Util {
        public String escapeJavaScript(String s) { return s == null ? "" : StringEscapeUtils.escapeJavaScript(s); }
        public String base64Encode(String s) { return Base64.getEncoder().encodeToString(s.getBytes(StandardCharsets.UTF_8)); }
        public String base64Decode(String s) { return new String(Base64.getDecoder().decode(s), StandardCharsets.UTF_8); }
        public String urlEncode(String s) throws Exception { return URLEncoder.encode(s, "UTF-8"); }
        public String urlDecode(String s) throws Exception { return URLDecoder.decode(s, "UTF-8"); }
        public Object parseJson(String s) { return convert(JSONValue.parseKeepingOrder(s)); }
    }

    public static void main(String[] args) throws Exception {
        VelocityEngine engine = new VelocityEngine();
        engine.setProperty("runtime.log.logsystem.class", "org.apache.velocity.runtime.log.NullLogChute");
        engine.init();
        Configuration.defaultConfiguration();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        PrintStream out = new PrintStream(new FileOutputStream(FileDescriptor.out), true, "UTF-8");
        String line;
        while ((line = in.readLine()) != null) {
            JSONObject c = (JSONObject) JSONValue.parse(line);
            JSONObject result = new JSONObject();
            try {
                VelocityContext ctx = new VelocityContext();
                ctx.put("input", new Input((String) c.get("body")));
                ctx.put("util", new Util());
                Map<String, Object> context = new LinkedHashMap<>();
                context.put("requestId", "req-1");
                context.put("stage", "test");
                ctx.put("context", context);
                EventCartridge ec = new EventCartridge();
                ec.addEventHandler((ReferenceInsertionEventHandler) (ref, value) -> value == null ? "" : value);
                ec.attachToContext(ctx);
                StringWriter w = new StringWriter();
                engine.evaluate(ctx, w, "case", (String) c.get("template"));
                result.put("out", w.toString());
            } catch (Throwable e) {
                result.put("error", e.getClass().getSimpleName() + ": " + e.getMessage());
            }
            out.println(result.toJSONString(COMPACT));
        }
    }
}
