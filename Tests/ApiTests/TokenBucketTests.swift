import Api
import LguestKit
import Testing

/// Token buckets hold Firecracker's unsigned 64-bit values, within its document's int64: found by
/// schemathesis, which had `PUT /entropy` accept `{"size": -5}` with 204. Checked on a drive's
/// `rate_limiter` (the entropy device takes none).
struct TokenBucketTests {
    static func put(_ body: String) -> ApiResponse {
        let controller = Controller(id: "buckets", sandbox: false, console: ConsoleConnection(output: ConsoleHandler { _ in }))
        let drive = #"{"drive_id": "d", "is_root_device": false, "path_on_host": "/dev/null", "#
        return controller.handle(ApiRequest(method: "PUT", path: "/drives/d", body: Array((drive + body.dropFirst()).utf8)))
    }

    static func fault(_ response: ApiResponse) -> String { String(decoding: response.body, as: UTF8.self) }

    @Test func negativeAndOversizedValuesAreRefused() {
        for bucket in [#"{"size": -5, "refill_time": 0}"#, #"{"size": 5, "refill_time": -1}"#,
                       #"{"size": 5, "refill_time": 1, "one_time_burst": -1}"#, #"{"size": 1.5, "refill_time": 1}"#,
                       #"{"size": 18446744073709551616, "refill_time": 1}"#] {
            let response = Self.put(#"{"rate_limiter": {"bandwidth": \#(bucket)}}"#)
            #expect(response.status == 400, "\(bucket)")
            #expect(Self.fault(response).contains("An error occurred when deserializing the json body of a request: invalid value"), "\(bucket): \(Self.fault(response))")
            #expect(!Self.fault(response).contains("not valid JSON"), "\(bucket)")
        }
        let past = Self.put(#"{"rate_limiter": {"ops": {"size": 9223372036854775808, "refill_time": 1}}}"#)
        #expect(past.status == 400)
        #expect(Self.fault(past).contains("`rate_limiter.ops.size`: 9223372036854775808 is past 9223372036854775807"), "\(Self.fault(past))")
    }

    @Test func valuesFromZeroToInt64MaxAreTaken() {
        #expect(Self.put(#"{"rate_limiter": {"bandwidth": {"size": 0, "refill_time": 0}}}"#).status == 204)
        #expect(Self.put(#"{"rate_limiter": {"ops": {"size": 9223372036854775807, "refill_time": 100, "one_time_burst": 9223372036854775807}}}"#).status == 204)
        #expect(Self.put(#"{"rate_limiter": {"ops": {"size": 1, "refill_time": 1, "one_time_burst": null}}}"#).status == 204)
    }
}
