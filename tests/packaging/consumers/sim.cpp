// A minimal simulator for the consumer projects: 3 parameters, cost = sum of squares.
#include <pybridge/pybridge.hpp>

int main() {
    pybridge::Channel channel = pybridge::Channel::open({3});
    while (auto request = channel.wait()) {
        double cost = 0.0;
        for (double x : request->params()) cost += x * x;
        channel.reply(cost);
    }
}
